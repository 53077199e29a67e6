//! `/health` and `/metrics`: read from the node's view and the control plane's state, never
//! waiting for a change in progress. Neither needs a signature.
use serde_json::json;
use warp::http::{StatusCode, header};
use warp::reply::Response;

use super::{Api, json_response};

impl Api {
    pub(super) fn health(&self) -> Response {
        let view = self.node.view();
        let counts = view.counts((self.clock)());
        let control = match &self.control {
            None => json!({"state": "standalone", "ok": true}),
            Some(h) => {
                let h = h.get();
                json!({"state": h.summary(), "ok": h.is_healthy()})
            }
        };
        let (dataplane, store_ok) = (view.health.dataplane_ok, view.health.store_ok);
        let ok = dataplane && store_ok;
        let body = json!({
            "status": if ok { "ok" } else { "degraded" },
            "version": env!("CARGO_PKG_VERSION"),
            "interface": { "up": dataplane, "backend": self.node.backend_name() },
            "store": if store_ok { "ok" } else { "failing" },
            "control_plane": control,
            "capacity": {
                "max": self.max_capacity,
                "peers": counts.total,
                "active": counts.active,
                "free_addresses": view.free_addresses,
                "at_capacity": view.at_capacity(self.max_capacity),
            },
        });
        json_response(
            if ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            },
            &body,
        )
    }

    pub(super) fn metrics_text(&self) -> Response {
        let view = self.node.view();
        let text = self
            .metrics
            .render(view.counts((self.clock)()), view.passes);
        let mut r = Response::new(text.into());
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        r
    }
}
