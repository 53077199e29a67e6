//! A wg-quick config as a QR code for a terminal, the way phone WireGuard apps import it
//! ("scan from QR code"): two rows of modules per text line, with a quiet zone. Dark modules
//! are left as the terminal's background and light ones drawn in its text colour, which reads
//! right on the usual dark terminal (as `qrencode -t utf8` does).
use qrcode::render::unicode::Dense1x2;
use qrcode::{EcLevel, QrCode};

/// The QR code of `text` as lines of half-block characters, or why it cannot be one (a config
/// longer than the largest QR code holds).
pub fn render(text: &str) -> Result<String, String> {
    // Level L holds the most: a config with IPv6 and several DNS servers still fits.
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::L)
        .map_err(|e| format!("config does not fit in a QR code: {e}"))?;
    Ok(code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_becomes_a_square_of_half_blocks() {
        let config = "[Interface]\nPrivateKey = aGVsbG8gd29ybGQgaGVsbG8gd29ybGQgaGVsbG8gd28=\n\
                      Address = 10.0.0.2/32\nDNS = 1.1.1.1\n\n[Peer]\n\
                      PublicKey = aGVsbG8gd29ybGQgaGVsbG8gd29ybGQgaGVsbG8gd28=\n\
                      Endpoint = 203.0.113.7:51820\nAllowedIPs = 0.0.0.0/0, ::/0\n";
        let qr = render(config).unwrap();
        let lines: Vec<&str> = qr.lines().collect();
        let width = lines[0].chars().count();
        assert!(lines.iter().all(|l| l.chars().count() == width));
        // Two module rows a line: about half as many lines as columns.
        assert!(
            lines.len() * 2 >= width && lines.len() * 2 <= width + 2,
            "{qr}"
        );
        assert!(qr.chars().all(|c| " ▀▄█\n".contains(c)), "{qr}");
        assert_eq!(
            decode(&qr),
            config,
            "the printed code scans back to the config"
        );
        // Different configs give different codes.
        assert_ne!(qr, render(&config.replace("10.0.0.2", "10.0.0.3")).unwrap());
    }

    /// Reads the printed code back as a scanner would: half blocks to modules (dark on the
    /// terminal is a space or the unlit half), each module scaled to 4×4 pixels.
    fn decode(printed: &str) -> String {
        let rows: Vec<Vec<bool>> = printed
            .lines()
            .flat_map(|l| {
                let top = l.chars().map(|c| c == ' ' || c == '▄').collect::<Vec<_>>();
                let bottom = l.chars().map(|c| c == ' ' || c == '▀').collect::<Vec<_>>();
                [top, bottom]
            })
            .collect();
        let (w, h) = (rows[0].len() * 4, rows.len() * 4);
        let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| {
            if rows[y / 4][x / 4] { 0 } else { 255 }
        });
        let grids = img.detect_grids();
        assert_eq!(grids.len(), 1);
        grids[0].decode().unwrap().1
    }

    #[test]
    fn too_long_for_a_qr_code_is_an_error() {
        assert!(render(&"x".repeat(4000)).is_err());
    }
}
