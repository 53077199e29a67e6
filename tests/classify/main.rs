//! Traffic classification: the detectors on packets built from the specifications, properties
//! of the packet path, `inspect` over capture files, and live capture on loopback (root).
mod capture;
mod detectors;
mod inspect;
mod props;
