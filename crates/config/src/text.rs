//! The one check for names that people read: no control or invisible characters.
//!
//! Key names, owners, provider names and model names show up in listings, logs
//! and dashboards. A bidi override (U+202E) makes `gpt-4o<U+202E>txt.exe` read backwards, a
//! zero-width space makes two names that look the same differ, and a control
//! character can forge a log line. The admin API and the gateway's embedded
//! settings both refuse such names through [`check_visible`].

use std::fmt;

/// Why a character is refused, for the error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invisible {
    /// C0 and C1 control characters (`U+0000`–`U+001F`, `U+007F`–`U+009F`).
    Control,
    /// Bidirectional overrides, embeddings and isolates.
    Bidi,
    /// Zero-width spaces, joiners and the byte-order mark.
    ZeroWidth,
    /// Other Unicode format (`Cf`) characters, such as the soft hyphen.
    Format,
    /// The line and paragraph separators (`U+2028`, `U+2029`).
    Separator,
}

impl fmt::Display for Invisible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Invisible::Control => "control",
            Invisible::Bidi => "bidirectional",
            Invisible::ZeroWidth => "zero-width",
            Invisible::Format => "invisible formatting",
            Invisible::Separator => "line or paragraph separator",
        })
    }
}

/// A refused character: its kind and position (in characters, from 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("must not contain {kind} characters (U+{code:04X} at position {position})")]
pub struct InvisibleChar {
    pub kind: Invisible,
    pub code: u32,
    pub position: usize,
}

/// The kind of `c` when it is a control or invisible character.
pub fn classify(c: char) -> Option<Invisible> {
    let u = u32::from(c);
    if c.is_control() {
        return Some(Invisible::Control);
    }
    match u {
        0x202A..=0x202E | 0x2066..=0x2069 | 0x200E | 0x200F | 0x061C => Some(Invisible::Bidi),
        0x200B..=0x200D | 0x2060..=0x2064 | 0xFEFF => Some(Invisible::ZeroWidth),
        0x2028 | 0x2029 => Some(Invisible::Separator),
        _ if is_other_format(u) => Some(Invisible::Format),
        _ => None,
    }
}

/// The rest of Unicode's general category `Cf` (format), as of Unicode 15.1.
/// The standard library does not expose general categories, and the list is
/// short and stable.
fn is_other_format(u: u32) -> bool {
    matches!(
        u,
        0x00AD
            | 0x0600..=0x0605
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x180E
            | 0x2065
            | 0x206A..=0x206F
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    )
}

/// Refuses `value` when it holds any character [`classify`] names; the error
/// says which kind and where, never the value.
pub fn check_visible(value: &str) -> Result<(), InvisibleChar> {
    for (position, c) in value.chars().enumerate() {
        if let Some(kind) = classify(c) {
            return Err(InvisibleChar {
                kind,
                code: u32::from(c),
                position,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invisible_and_control_characters_are_refused_by_kind() {
        let cases: &[(&str, Option<Invisible>)] = &[
            ("gpt-4o", None),
            ("Zoë's key (prod) – ünïcode ok", None),
            ("模型/名前", None),
            ("a\u{0}b", Some(Invisible::Control)),
            ("a\nb", Some(Invisible::Control)),
            ("a\u{7f}", Some(Invisible::Control)),
            ("a\u{85}", Some(Invisible::Control)),
            ("a\u{9b}", Some(Invisible::Control)),
            ("gpt\u{202E}4o", Some(Invisible::Bidi)),
            ("\u{202A}", Some(Invisible::Bidi)),
            ("\u{2066}x\u{2069}", Some(Invisible::Bidi)),
            ("a\u{200F}", Some(Invisible::Bidi)),
            ("a\u{061C}", Some(Invisible::Bidi)),
            ("gpt\u{200B}4o", Some(Invisible::ZeroWidth)),
            ("a\u{200D}", Some(Invisible::ZeroWidth)),
            ("a\u{2060}", Some(Invisible::ZeroWidth)),
            ("a\u{2064}", Some(Invisible::ZeroWidth)),
            ("\u{FEFF}model", Some(Invisible::ZeroWidth)),
            ("soft\u{AD}hyphen", Some(Invisible::Format)),
            ("tag\u{E0041}", Some(Invisible::Format)),
            ("a\u{FFF9}", Some(Invisible::Format)),
            ("a\u{2028}b", Some(Invisible::Separator)),
            ("a\u{2029}b", Some(Invisible::Separator)),
        ];
        for (value, expected) in cases {
            let got = check_visible(value).err().map(|e| e.kind);
            assert_eq!(got, *expected, "{value:?}");
        }
    }

    #[test]
    fn the_error_names_the_kind_and_position_without_the_value() {
        let e = check_visible("secret\u{202E}name").unwrap_err();
        let msg = e.to_string();
        assert_eq!(
            msg,
            "must not contain bidirectional characters (U+202E at position 6)"
        );
        assert!(!msg.contains("secret"));
    }
}
