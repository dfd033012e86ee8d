//! STOS amounts: `u128` wei (1 STOS = 10^18 wei), parsed and printed exactly.
//! JSON carries them as decimal strings: they exceed what a JSON number can
//! hold exactly in most readers.

use crate::VerifyError;

/// Wei in one STOS.
pub const WEI_PER_STOS: u128 = 1_000_000_000_000_000_000;

/// Reads an amount: `N wei` / `Nwei`, or STOS with up to 18 decimals
/// (`1.5`, `1.5 STOS`, `0.000000000000000001stos`).
///
/// ```
/// use stratosdb_verifier::traffic::wei::{parse_amount, format_stos};
/// assert_eq!(parse_amount("1.5 STOS").unwrap(), 1_500_000_000_000_000_000);
/// assert_eq!(parse_amount("42wei").unwrap(), 42);
/// assert_eq!(format_stos(1_500_000_000_000_000_000), "1.5 STOS");
/// assert!(parse_amount("1.0000000000000000001").is_err());
/// ```
pub fn parse_amount(text: &str) -> Result<u128, VerifyError> {
    let bad = |why: &str| VerifyError::MalformedAmount(format!("{text:?}: {why}"));
    let t = text.trim();
    let lower = t.to_ascii_lowercase();
    if let Some(n) = lower.strip_suffix("wei") {
        return n
            .trim()
            .parse::<u128>()
            .map_err(|_| bad("expected a whole number of wei"));
    }
    let n = lower.strip_suffix("stos").unwrap_or(&lower).trim();
    let (whole, frac) = n.split_once('.').unwrap_or((n, ""));
    if whole.is_empty() && frac.is_empty() {
        return Err(bad("no digits"));
    }
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) || !all_digits(frac) {
        return Err(bad("expected digits, an optional point, and STOS or wei"));
    }
    if frac.len() > 18 {
        return Err(bad("more than 18 decimals (1 wei = 10^-18 STOS)"));
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad("too large"))?
    };
    let frac_wei: u128 = if frac.is_empty() {
        0
    } else {
        let scale = 10u128.pow(18 - frac.len() as u32);
        frac.parse::<u128>().map_err(|_| bad("too large"))? * scale
    };
    whole
        .checked_mul(WEI_PER_STOS)
        .and_then(|w| w.checked_add(frac_wei))
        .ok_or_else(|| bad("too large"))
}

/// `1.5 STOS`, exact, without trailing zeros.
pub fn format_stos(wei: u128) -> String {
    let whole = wei / WEI_PER_STOS;
    let frac = wei % WEI_PER_STOS;
    if frac == 0 {
        return format!("{whole} STOS");
    }
    let digits = format!("{frac:018}");
    format!("{whole}.{} STOS", digits.trim_end_matches('0'))
}

/// Serde for `u128` wei as a decimal string (`#[serde(with = "wei::string")]`).
pub mod string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(wei: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&wei.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map_err(|_| serde::de::Error::custom(format!("{text:?} is not a whole number of wei")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_parse_and_print_exactly() {
        for (text, wei) in [
            ("1", WEI_PER_STOS),
            ("0.000000000000000001", 1),
            ("1e3wei", 0),
            (".5", WEI_PER_STOS / 2),
            ("12.34 stos", 12_340_000_000_000_000_000),
            ("7 wei", 7),
        ] {
            if text == "1e3wei" {
                assert!(parse_amount(text).is_err());
                continue;
            }
            assert_eq!(parse_amount(text).unwrap(), wei, "{text}");
            assert_eq!(parse_amount(&format_stos(wei)).unwrap(), wei);
        }
        for bad in [
            "",
            ".",
            "-1",
            "1.2.3",
            "abc",
            "1,5",
            "340282366920938463463374607431768211456wei",
        ] {
            assert!(parse_amount(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_amount(&format_stos(u128::MAX)).unwrap(), u128::MAX);
    }
}
