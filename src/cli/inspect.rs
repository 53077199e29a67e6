//! `waylume-server inspect`: classifies every flow of a pcap or pcapng file.
//!
//! Reads the file with libpcap, strips the link layer, runs the same classifier as the live
//! capture and prints one line per flow, as JSON or as a table.
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::core::classify::link::{self, LinkType};
use crate::core::classify::{Classifier, ClassifierConfig, FlowRecord};
use crate::core::packet;

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("cannot open capture {path}: {source}")]
    Open { path: PathBuf, source: pcap::Error },
    #[error("capture {path}: unsupported link type {name} ({dlt})")]
    UnsupportedLink {
        path: PathBuf,
        name: String,
        dlt: i32,
    },
    #[error("reading capture {path}: {source}")]
    Read { path: PathBuf, source: pcap::Error },
    #[error("writing the report: {0}")]
    Write(#[from] std::io::Error),
}

/// Counts over a whole capture file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub frames: u64,
    /// Frames that carried a TCP or UDP packet the classifier saw.
    pub classified_packets: u64,
    pub flows: u64,
}

/// The offline classifier: as the live one, but the table holds a whole file's flows.
pub fn offline_config() -> ClassifierConfig {
    ClassifierConfig {
        max_flows: 4 << 20,
        ..ClassifierConfig::default()
    }
}

/// Classifies `path` and returns its flows in order of first appearance.
pub fn classify_file(path: &Path) -> Result<(Vec<FlowRecord>, Summary), InspectError> {
    let mut cap = pcap::Capture::from_file(path).map_err(|source| InspectError::Open {
        path: path.to_owned(),
        source,
    })?;
    let dlt = cap.get_datalink();
    let Some(link) = LinkType::from_dlt(dlt.0) else {
        let name = dlt.get_name().unwrap_or_else(|_| "unknown".to_owned());
        return Err(InspectError::UnsupportedLink {
            path: path.to_owned(),
            name,
            dlt: dlt.0,
        });
    };
    let mut classifier = Classifier::new(offline_config());
    let mut flows = Vec::new();
    let mut summary = Summary::default();
    let mut keep = |r: FlowRecord| flows.push(r);
    loop {
        let frame = match cap.next_packet() {
            Ok(f) => f,
            Err(pcap::Error::NoMorePackets) => break,
            Err(source) => {
                return Err(InspectError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        summary.frames += 1;
        let ts = frame.header.ts;
        let now_us = (ts.tv_sec as u64)
            .wrapping_mul(1_000_000)
            .wrapping_add(ts.tv_usec as u64);
        let Some(ip) = link::ip_payload(link, frame.data) else {
            continue;
        };
        let Ok(p) = packet::parse_ip(ip) else {
            continue;
        };
        if classifier.observe(now_us, &p, &mut keep).is_some() {
            summary.classified_packets += 1;
        }
    }
    classifier.drain(&mut keep);
    flows.sort_unstable_by_key(|r| r.id);
    summary.flows = flows.len() as u64;
    Ok((flows, summary))
}

/// Writes one JSON object per flow per line. Every value comes from a fixed alphabet (digits,
/// hex, dots, colons, brackets, protocol names), so it is written directly without escaping.
pub fn write_json(out: &mut impl Write, flows: &[FlowRecord]) -> Result<(), InspectError> {
    for f in flows {
        write!(
            out,
            r#"{{"l4":"{}","a":"{}","b":"{}","protocol":"{}","#,
            f.l4.as_str(),
            f.a,
            f.b,
            f.protocol.as_str()
        )?;
        if f.tracker {
            // An HTTP flow that is a BitTorrent tracker request.
            out.write_all(br#""app":"bittorrent","#)?;
        }
        writeln!(
            out,
            r#""packets_inspected":{},"packets":{},"bytes":{}}}"#,
            f.packets_inspected, f.packets, f.bytes
        )?;
    }
    Ok(())
}

/// Writes a table for people, one row per flow.
pub fn write_table(out: &mut impl Write, flows: &[FlowRecord]) -> Result<(), InspectError> {
    writeln!(
        out,
        "{:<4} {:<47} {:<47} {:<11} {:>9} {:>9} {:>12}",
        "l4", "a", "b", "protocol", "inspected", "packets", "bytes"
    )?;
    for f in flows {
        let proto = if f.tracker {
            "http (bittorrent tracker)".to_owned()
        } else {
            f.protocol.to_string()
        };
        writeln!(
            out,
            "{:<4} {:<47} {:<47} {:<11} {:>9} {:>9} {:>12}",
            f.l4.as_str(),
            f.a.to_string(),
            f.b.to_string(),
            proto,
            f.packets_inspected,
            f.packets,
            f.bytes
        )?;
    }
    Ok(())
}

/// The subcommand: classify `path` and print the flows to `out`.
pub fn run(path: &Path, json: bool, out: &mut impl Write) -> Result<Summary, InspectError> {
    let (flows, summary) = classify_file(path)?;
    if json {
        write_json(out, &flows)?;
    } else {
        write_table(out, &flows)?;
    }
    out.flush()?;
    Ok(summary)
}
