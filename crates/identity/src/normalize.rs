//! Normalisation of identifier values, so that one person's e-mail or phone number written
//! in different ways is one identifier.

/// Trims and lower-cases an e-mail address. Returns `None` when the value is not an
/// address at all (no `@` with text on both sides, or white space inside).
pub fn email(raw: &str) -> Option<String> {
    let v = raw.trim();
    let at = v.rfind('@')?;
    if at == 0 || at + 1 == v.len() || v.chars().any(char::is_whitespace) {
        return None;
    }
    Some(v.to_lowercase())
}

/// Country calling codes of the ISO 3166 alpha-2 codes accepted as `default_country`.
const CALLING_CODES: &[(&str, &str)] = &[
    ("AE", "971"),
    ("AT", "43"),
    ("AZ", "994"),
    ("BE", "32"),
    ("BG", "359"),
    ("CA", "1"),
    ("CH", "41"),
    ("CY", "357"),
    ("CZ", "420"),
    ("DE", "49"),
    ("DK", "45"),
    ("ES", "34"),
    ("FI", "358"),
    ("FR", "33"),
    ("GB", "44"),
    ("GE", "995"),
    ("GR", "30"),
    ("IE", "353"),
    ("IT", "39"),
    ("KZ", "7"),
    ("NL", "31"),
    ("NO", "47"),
    ("PL", "48"),
    ("PT", "351"),
    ("RO", "40"),
    ("RU", "7"),
    ("SA", "966"),
    ("SE", "46"),
    ("TR", "90"),
    ("UA", "380"),
    ("US", "1"),
];

/// The calling code of a country (`"TR"` → `"90"`), if known.
pub fn calling_code(country: &str) -> Option<&'static str> {
    CALLING_CODES
        .iter()
        .find(|(c, _)| c.eq_ignore_ascii_case(country))
        .map(|(_, code)| *code)
}

/// The countries [`calling_code`] knows, for error messages.
pub fn known_countries() -> impl Iterator<Item = &'static str> {
    CALLING_CODES.iter().map(|(c, _)| *c)
}

/// Normalises a phone number to E.164 (`+905321234567`).
///
/// Spaces, dashes, dots and parentheses are ignored. A number starting with `+` or `00`
/// is international. Otherwise it is national to `default_code` (a calling code such as
/// `"90"`): a leading trunk `0` is dropped; a number longer than ten digits that already
/// starts with the calling code is taken as international without the `+`. The result
/// must have 8 to 15 digits, else `None`.
pub fn phone(raw: &str, default_code: &str) -> Option<String> {
    let raw = raw.trim();
    let mut digits = String::with_capacity(16);
    let mut plus = false;
    for (i, c) in raw.chars().enumerate() {
        match c {
            '0'..='9' => digits.push(c),
            '+' if i == 0 => plus = true,
            ' ' | '-' | '.' | '(' | ')' | '/' => {}
            _ => return None,
        }
    }
    let international = if plus {
        digits
    } else if let Some(rest) = digits.strip_prefix("00") {
        rest.to_string()
    } else if let Some(rest) = digits.strip_prefix('0') {
        format!("{default_code}{rest}")
    } else if digits.len() > 10 && digits.starts_with(default_code) {
        digits
    } else {
        format!("{default_code}{digits}")
    };
    if !(8..=15).contains(&international.len()) || international.starts_with('0') {
        return None;
    }
    Some(format!("+{international}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(
            email("  Ayse.Yilmaz@Example.COM ").as_deref(),
            Some("ayse.yilmaz@example.com")
        );
        assert_eq!(email("no-at-sign"), None);
        assert_eq!(email("@example.com"), None);
        assert_eq!(email("a@"), None);
        assert_eq!(email("a b@example.com"), None);
    }

    #[test]
    fn turkish_phones_in_every_usual_form() {
        for raw in [
            "+90 532 123 45 67",
            "0532 123 45 67",
            "(0532) 123-45-67",
            "532 123 4567",
            "905321234567",
            "0090 532 123 45 67",
        ] {
            assert_eq!(phone(raw, "90").as_deref(), Some("+905321234567"), "{raw}");
        }
    }

    #[test]
    fn foreign_and_bad_phones() {
        assert_eq!(
            phone("+49 30 1234567", "90").as_deref(),
            Some("+49301234567")
        );
        assert_eq!(phone("12", "90"), None);
        assert_eq!(phone("call me", "90"), None);
        assert_eq!(phone("+1234567890123456", "90"), None);
        assert_eq!(calling_code("tr"), Some("90"));
        assert_eq!(calling_code("XX"), None);
    }
}
