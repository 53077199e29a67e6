//! `waylume-server inspect`: classifies every flow of a pcap or pcapng file.
//!
//! Reads classic pcap files itself and other formats (pcapng) with libpcap, strips the link layer, runs the same classifier as the live
//! capture and prints one line per flow, as JSON or as a table.
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::core::classify::link::{self, LinkType};
use crate::core::classify::{Classifier, ClassifierConfig, FlowRecord};
use crate::core::packet;
use crate::sys::pcapfile;

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
        max_flows_per_owner: 4 << 20,
        ..ClassifierConfig::default()
    }
}

/// Classifies `path` and returns its flows in order of first appearance.
pub fn classify_file(path: &Path) -> Result<(Vec<FlowRecord>, Summary), InspectError> {
    let mut classifier = Classifier::new(offline_config());
    let mut flows = Vec::new();
    let mut summary = Summary::default();
    let mut keep = |r: FlowRecord| flows.push(r);
    let mut frame = |link: LinkType, now_us: u64, data: &[u8]| {
        summary.frames += 1;
        let Some(ip) = link::ip_payload(link, data) else {
            return;
        };
        let Ok(p) = packet::parse_ip(ip) else {
            return;
        };
        classifier.observe(now_us, &p, &mut keep);
        summary.classified_packets += 1;
    };
    if classic(path) {
        read_classic(path, &mut frame)?;
    } else {
        read_with_libpcap(path, &mut frame)?;
    }
    classifier.drain(&mut keep);
    in_order_of_appearance(&mut flows);
    summary.flows = flows.len() as u64;
    Ok((flows, summary))
}

/// Sorts flows by id. Ids count from zero and every flow ends once, so they are usually a
/// permutation of the indexes and each record can be put in its place directly; evicted flows
/// (only past millions of flows) leave gaps, and then it sorts.
fn in_order_of_appearance(flows: &mut [FlowRecord]) {
    let n = flows.len();
    if flows.iter().any(|r| r.id >= n as u64) {
        flows.sort_unstable_by_key(|r| r.id);
        return;
    }
    for i in 0..n {
        while flows[i].id != i as u64 {
            let j = flows[i].id as usize;
            if flows[j].id == j as u64 {
                // Two records with one id: not a permutation after all.
                flows.sort_unstable_by_key(|r| r.id);
                return;
            }
            flows.swap(i, j);
        }
    }
}

fn unsupported(path: &Path, dlt: i32) -> InspectError {
    let name = pcap::Linktype(dlt)
        .get_name()
        .unwrap_or_else(|_| "unknown".to_owned());
    InspectError::UnsupportedLink {
        path: path.to_owned(),
        name,
        dlt,
    }
}

/// Whether the file is a classic pcap file, read here without libpcap.
fn classic(path: &Path) -> bool {
    let mut head = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| pcapfile::is_classic(&head))
}

fn read_classic(
    path: &Path,
    frame: &mut impl FnMut(LinkType, u64, &[u8]),
) -> Result<(), InspectError> {
    let io_err = |e: std::io::Error| InspectError::Read {
        path: path.to_owned(),
        source: pcap::Error::IoError(e.kind()),
    };
    let file = std::fs::File::open(path).map_err(io_err)?;
    let mut r = pcapfile::Reader::new(file).map_err(io_err)?;
    let dlt = r.linktype as i32;
    let link = LinkType::from_dlt(dlt).ok_or_else(|| unsupported(path, dlt))?;
    while let Some((now_us, data)) = r.next_record().map_err(io_err)? {
        frame(link, now_us, data);
    }
    Ok(())
}

fn read_with_libpcap(
    path: &Path,
    frame: &mut impl FnMut(LinkType, u64, &[u8]),
) -> Result<(), InspectError> {
    let mut cap = pcap::Capture::from_file(path).map_err(|source| InspectError::Open {
        path: path.to_owned(),
        source,
    })?;
    let dlt = cap.get_datalink().0;
    let link = LinkType::from_dlt(dlt).ok_or_else(|| unsupported(path, dlt))?;
    loop {
        let f = match cap.next_packet() {
            Ok(f) => f,
            Err(pcap::Error::NoMorePackets) => return Ok(()),
            Err(source) => {
                return Err(InspectError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let ts = f.header.ts;
        let now_us = (ts.tv_sec as u64)
            .wrapping_mul(1_000_000)
            .wrapping_add(ts.tv_usec as u64);
        frame(link, now_us, f.data);
    }
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
