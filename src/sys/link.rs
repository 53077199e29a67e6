//! Links, addresses and routes through rtnetlink.
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
use rtnetlink::{Handle, LinkUnspec, LinkWireguard, MulticastGroup, RouteMessageBuilder};

const EEXIST: i32 = 17;
const ENODEV: i32 = 19;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("netlink: cannot open a socket: {0}")]
    Socket(std::io::Error),
    #[error("netlink: {what} {name}: {source}")]
    Request {
        what: &'static str,
        name: String,
        source: std::io::Error,
    },
}

fn io_of(e: rtnetlink::Error) -> std::io::Error {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io(),
        other => std::io::Error::other(other.to_string()),
    }
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

/// A netlink connection bound to the current network namespace.
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    pub fn connect() -> Result<Netlink, LinkError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(LinkError::Socket)?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    pub async fn index(&self, name: &str) -> Result<Option<u32>, LinkError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(Some(l)) => Ok(Some(l.header.index)),
            Ok(None) => Ok(None),
            Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
            Err(e) => Err(LinkError::Request {
                what: "get link",
                name: name.into(),
                source: io_of(e),
            }),
        }
    }

    /// Creates a kernel WireGuard interface. The error's `raw_os_error` tells a missing module
    /// (EOPNOTSUPP) from other failures.
    pub async fn create_wireguard(&self, name: &str) -> Result<(), LinkError> {
        let msg = LinkWireguard::new(name).build();
        match self.handle.link().add(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(EEXIST) => Ok(()),
            Err(e) => Err(LinkError::Request {
                what: "create wireguard link",
                name: name.into(),
                source: io_of(e),
            }),
        }
    }

    pub async fn delete(&self, name: &str) -> Result<(), LinkError> {
        let Some(index) = self.index(name).await? else {
            return Ok(());
        };
        self.handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(|e| LinkError::Request {
                what: "delete link",
                name: name.into(),
                source: io_of(e),
            })
    }

    /// Sets the MTU, adds each address (keeping ones already there) and brings the link up.
    pub async fn configure(
        &self,
        name: &str,
        addrs: &[(IpAddr, u8)],
        mtu: u16,
    ) -> Result<(), LinkError> {
        let req = |what| {
            move |e: rtnetlink::Error| LinkError::Request {
                what,
                name: name.into(),
                source: io_of(e),
            }
        };
        let index = self.index(name).await?.ok_or_else(|| LinkError::Request {
            what: "configure link",
            name: name.into(),
            source: std::io::Error::from_raw_os_error(ENODEV),
        })?;
        let present = self.addresses(index).await?;
        for (addr, prefix) in addrs {
            if present.contains(addr) {
                continue;
            }
            match self
                .handle
                .address()
                .add(index, *addr, *prefix)
                .execute()
                .await
            {
                Err(e) if errno(&e) != Some(EEXIST) => return Err(req("add address")(e)),
                _ => {}
            }
        }
        let msg = LinkUnspec::new_with_index(index)
            .mtu(u32::from(mtu))
            .up()
            .build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(req("set link up"))
    }

    async fn addresses(&self, index: u32) -> Result<Vec<IpAddr>, LinkError> {
        let mut out = Vec::new();
        let mut s = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        while let Some(msg) = s.try_next().await.map_err(|e| LinkError::Request {
            what: "list addresses",
            name: index.to_string(),
            source: io_of(e),
        })? {
            out.extend(msg.attributes.iter().filter_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            }));
        }
        Ok(out)
    }

    /// IPv4 routes of the main table as (destination, interface name).
    pub async fn ipv4_routes(&self) -> Result<Vec<(Ipv4Net, String)>, LinkError> {
        let names = self.link_names().await?;
        let mut out = Vec::new();
        let mut s = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute();
        while let Some(r) = s.try_next().await.map_err(|e| LinkError::Request {
            what: "list routes",
            name: "ipv4".into(),
            source: io_of(e),
        })? {
            if r.header.table != 254 {
                continue;
            }
            let mut dst = Ipv4Addr::UNSPECIFIED;
            let mut oif = None;
            for a in &r.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = *ip,
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    _ => {}
                }
            }
            let dev = oif
                .and_then(|i| names.iter().find(|(idx, _)| *idx == i))
                .map(|(_, n)| n.clone());
            if let (Ok(net), Some(dev)) =
                (Ipv4Net::new(dst, r.header.destination_prefix_length), dev)
            {
                out.push((net, dev));
            }
        }
        Ok(out)
    }

    async fn link_names(&self) -> Result<Vec<(u32, String)>, LinkError> {
        let mut out = Vec::new();
        let mut s = self.handle.link().get().execute();
        while let Some(l) = s.try_next().await.map_err(|e| LinkError::Request {
            what: "list links",
            name: "all".into(),
            source: io_of(e),
        })? {
            let name = l.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            });
            if let Some(n) = name {
                out.push((l.header.index, n));
            }
        }
        Ok(out)
    }

    /// The interface of the IPv4 default route and its first IPv4 address.
    pub async fn default_route(&self) -> Result<Option<(String, Option<Ipv4Addr>)>, LinkError> {
        let routes = self.ipv4_routes().await?;
        let Some((_, dev)) = routes.into_iter().find(|(net, _)| net.prefix_len() == 0) else {
            return Ok(None);
        };
        let Some(index) = self.index(&dev).await? else {
            return Ok(None);
        };
        let addr = self
            .addresses(index)
            .await?
            .into_iter()
            .find_map(|a| match a {
                IpAddr::V4(v4) => Some(v4),
                IpAddr::V6(_) => None,
            });
        Ok(Some((dev, addr)))
    }
}

/// Calls `changed` after every address added to or removed from any interface of this
/// namespace, for as long as the kernel keeps the subscription.
pub async fn watch_addresses(mut changed: impl FnMut()) -> Result<(), LinkError> {
    use futures::StreamExt;
    let groups = [MulticastGroup::Ipv4Ifaddr, MulticastGroup::Ipv6Ifaddr];
    let (conn, _handle, mut events) =
        rtnetlink::new_multicast_connection(&groups).map_err(LinkError::Socket)?;
    let conn = tokio::spawn(conn);
    while let Some((msg, _)) = events.next().await {
        if let NetlinkPayload::InnerMessage(
            RouteNetlinkMessage::NewAddress(_) | RouteNetlinkMessage::DelAddress(_),
        ) = msg.payload
        {
            changed();
        }
    }
    conn.abort();
    Ok(())
}
