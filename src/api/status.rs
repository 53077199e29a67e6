//! `/health` and `/metrics`: read from the node's view and the control plane's state, never
//! waiting for a change in progress. Neither needs a signature.
use serde_json::json;
use warp::http::{StatusCode, header};
use warp::reply::Response;

use super::metrics::{NodeFigures, PeerSample};
use super::{Api, json_response};
use crate::node::PeerStatus;

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
        let figures = NodeFigures {
            counts: view.counts((self.clock)()),
            max: usize::from(self.max_capacity),
            dataplane_up: view.health.dataplane_ok,
            passes: view.passes,
        };
        let samples: Vec<PeerSample> = if self.metrics.per_peer {
            view.list().into_iter().map(peer_sample).collect()
        } else {
            Vec::new()
        };
        let text = self.metrics.render(figures, &samples);
        let mut r = Response::new(text.into());
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        r
    }
}

fn peer_sample(s: &PeerStatus) -> PeerSample {
    let usage = s.usage();
    PeerSample {
        peer_id: s.peer.id.to_string(),
        rx_bytes: usage.rx,
        tx_bytes: usage.tx,
        cap_used_bytes: s.counters.cap_used,
        last_handshake: s.counters.last_handshake,
    }
}
