//! Traffic classification: the detectors on packets built from the specifications, properties
//! of the packet path, `inspect` over capture files, live capture on loopback (root), other
//! protocols that must never read as BitTorrent, and hostile peers against the flow table.
mod capture;
mod detectors;
mod flood;
mod inspect;
mod negative;
mod props;
mod utp;
