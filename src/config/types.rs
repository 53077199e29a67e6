//! Newtypes that can only hold valid values.
use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// A secret string. Never printed: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Identifies this node in the fleet table and in request signatures: URL-safe, 1–64 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerId(String);

impl ServerId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ServerId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let ok = |c: char| c.is_ascii_alphanumeric() || "-._~".contains(c);
        if s.is_empty() || s.len() > 64 {
            return Err("must be 1 to 64 characters".into());
        }
        if !s.chars().all(ok) {
            return Err(format!("{s:?} is not URL-safe (letters, digits, - . _ ~)"));
        }
        Ok(ServerId(s.into()))
    }
}

impl fmt::Display for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A network interface name as the kernel accepts it: 1–15 bytes, no `/`, whitespace or `:`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IfName(String);

impl IfName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for IfName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > 15 {
            return Err(format!("{s:?} must be 1 to 15 bytes"));
        }
        if s == "."
            || s == ".."
            || s.chars()
                .any(|c| c == '/' || c == ':' || !c.is_ascii_graphic())
        {
            return Err(format!("{s:?} is not a valid interface name"));
        }
        Ok(IfName(s.into()))
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which WireGuard implementation carries the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The kernel module when present, else `wireguard-go`.
    Auto,
    Kernel,
    Userspace,
}

impl FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Backend::Auto),
            "kernel" => Ok(Backend::Kernel),
            "userspace" => Ok(Backend::Userspace),
            _ => Err(format!("{s:?} is not one of auto, kernel, userspace")),
        }
    }
}

/// `host:port` as written into client configs; the host is a name or an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint(String);

impl Endpoint {
    pub fn from_parts(host: &str, port: u16) -> Endpoint {
        if host.contains(':') {
            Endpoint(format!("[{host}]:{port}"))
        } else {
            Endpoint(format!("{host}:{port}"))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Endpoint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?} is not host:port"))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{s:?} has no valid port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name_ok = |c: char| c.is_ascii_alphanumeric() || "-.:".contains(c);
        if host.is_empty() || host.len() > 253 || !host.chars().all(name_ok) {
            return Err(format!("{s:?} has no valid host"));
        }
        Ok(Endpoint::from_parts(host, port))
    }
}
