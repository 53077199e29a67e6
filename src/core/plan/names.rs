//! Names the NixOS module derives as well. Both sides read `names.json` (the module through
//! `lib.importJSON`), so the IFB the daemon creates is the one the module keeps network
//! managers away from.
use std::sync::LazyLock;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SharedNames {
    ifb_prefix: String,
    ifname_max_bytes: usize,
}

const NAMES_JSON: &str = include_str!("names.json");

fn parse(text: &str) -> Result<SharedNames, serde_json::Error> {
    serde_json::from_str(text)
}

// The file is part of the binary and parsed by the tests below: a parse error cannot ship.
static NAMES: LazyLock<SharedNames> =
    LazyLock::new(|| parse(NAMES_JSON).expect("names.json is embedded and tested"));

/// The IFB that carries a WireGuard interface's upload traffic: `ifb-<iface>`, cut to the
/// kernel's interface-name limit.
pub fn ifb_name(iface: &str) -> String {
    let mut name = format!("{}{iface}", NAMES.ifb_prefix);
    // Interface names are ASCII (the config checks them), so a byte cut is a char cut.
    while name.len() > NAMES.ifname_max_bytes {
        name.pop();
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_file_parses_and_names_the_ifb() {
        let names = parse(NAMES_JSON).unwrap();
        assert_eq!(names.ifname_max_bytes, 15, "Linux IFNAMSIZ without the NUL");
        assert_eq!(ifb_name("wg0"), "ifb-wg0");
        assert_eq!(ifb_name("waylume-uplink0"), "ifb-waylume-upl");
        assert!(parse(r#"{"ifb_prefix": "x", "ifname_max_bytes": 15, "extra": 1}"#).is_err());
    }
}
