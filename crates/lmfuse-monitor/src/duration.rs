//! Durations written in configuration files: `90s`, `15m`, `1h`, `1d`.

/// Seconds of a duration such as `30s`, `15m`, `1h` or `2d` (a positive whole number and one
/// unit); `None` when `text` is not one.
pub fn parse_seconds(text: &str) -> Option<i64> {
    let text = text.trim();
    let unit_at = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(unit_at);
    let n: i64 = number.parse().ok()?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return None,
    };
    (n > 0).then(|| n.checked_mul(scale)).flatten()
}

#[cfg(test)]
mod tests {
    use super::parse_seconds;

    #[test]
    fn units_scale_and_bad_text_is_refused() {
        assert_eq!(parse_seconds("90s"), Some(90));
        assert_eq!(parse_seconds("15m"), Some(900));
        assert_eq!(parse_seconds(" 1h "), Some(3_600));
        assert_eq!(parse_seconds("2d"), Some(172_800));
        for bad in ["", "h", "0m", "1.5h", "1w", "-1h", "1 h", "10"] {
            assert_eq!(parse_seconds(bad), None, "{bad:?}");
        }
    }
}
