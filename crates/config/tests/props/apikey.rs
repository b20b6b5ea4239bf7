//! Properties of `apikey::parse`: well-formed keys parse back to their parts,
//! anything else is refused without a panic and without being echoed.

use obleth_config::apikey::{self, KeyFormatError, KeyPart, PUBLIC_ID_LEN, SECRET_LEN};
use proptest::prelude::*;
use secrecy::ExposeSecret;

/// A public id as `generate` makes them.
fn public_id() -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[a-z0-9]{{{PUBLIC_ID_LEN}}}")).unwrap()
}

/// A secret as `generate` makes them.
fn secret() -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[A-Za-z0-9]{{{SECRET_LEN}}}")).unwrap()
}

/// A character that is allowed in neither part, `_` excluded (it changes the
/// shape rather than a part).
fn foreign_char() -> impl Strategy<Value = char> {
    any::<char>().prop_filter("not alphanumeric ASCII nor `_`", |c| {
        !c.is_ascii_alphanumeric() && *c != '_'
    })
}

/// Every error message `parse` can give. The messages are fixed strings, so
/// an error that is one of them cannot carry any part of the input.
const MESSAGES: &[&str] = &[
    "the key does not start with `obk_`",
    "the key is not shaped `obk_<public id>_<secret>`",
    "the key's public id contains a character that is not allowed",
    "the key's secret contains a character that is not allowed",
    "the key's public id has the wrong length",
    "the key's secret has the wrong length",
];

/// Every Debug form of the errors, for the same reason.
const DEBUG_FORMS: &[&str] = &[
    "WrongPrefix",
    "WrongShape",
    "BadCharacter(PublicId)",
    "BadCharacter(Secret)",
    "WrongLength(PublicId)",
    "WrongLength(Secret)",
];

/// Fails unless `err` shows as one of the fixed texts.
fn assert_fixed_text(err: KeyFormatError) -> Result<(), TestCaseError> {
    let display = err.to_string();
    let debug = format!("{err:?}");
    prop_assert!(MESSAGES.contains(&display.as_str()), "{display:?}");
    prop_assert!(DEBUG_FORMS.contains(&debug.as_str()), "{debug:?}");
    Ok(())
}

/// What `parse` says about `input`, without the borrowed parts.
fn refusal(input: &str) -> Result<(), KeyFormatError> {
    apikey::parse(input).map(drop)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn well_formed_keys_parse_back_to_their_parts(id in public_id(), secret in secret()) {
        let key = apikey::from_parts(&id, &secret);
        let parsed = apikey::parse(&key).unwrap();
        prop_assert_eq!(parsed.public_id, id.as_str());
        prop_assert_eq!(parsed.secret, secret.as_str());
        prop_assert_eq!(parsed.hash(), apikey::hash_secret(&secret));
        let shown = format!("{parsed:?}");
        prop_assert!(!shown.contains(&secret), "{}", shown);
    }

    #[test]
    fn arbitrary_strings_never_panic_nor_echo(input in any::<String>()) {
        match apikey::parse(&input) {
            Ok(key) => prop_assert_eq!(apikey::from_parts(key.public_id, key.secret), input),
            Err(err) => assert_fixed_text(err)?,
        }
    }

    #[test]
    fn strings_that_look_like_keys_never_panic_nor_echo(
        input in "(obk_|OBK_|obk|sk_)?[a-zA-Z0-9_é\\- ]{0,60}",
    ) {
        match apikey::parse(&input) {
            Ok(key) => {
                prop_assert_eq!(apikey::from_parts(key.public_id, key.secret), input);
            }
            Err(err) => assert_fixed_text(err)?,
        }
    }

    #[test]
    fn a_wrong_prefix_is_refused(
        prefix in "[a-zA-Z0-9_]{0,6}",
        id in public_id(),
        secret in secret(),
    ) {
        prop_assume!(prefix != "obk_");
        let input = format!("{prefix}{id}_{secret}");
        prop_assume!(!input.starts_with("obk_"));
        prop_assert_eq!(refusal(&input), Err(KeyFormatError::WrongPrefix));
    }

    #[test]
    fn a_wrong_length_is_refused(
        id in "[a-z0-9]{1,30}",
        secret in "[A-Za-z0-9]{1,80}",
    ) {
        prop_assume!(id.len() != PUBLIC_ID_LEN || secret.len() != SECRET_LEN);
        let expected = if id.len() != PUBLIC_ID_LEN {
            KeyFormatError::WrongLength(KeyPart::PublicId)
        } else {
            KeyFormatError::WrongLength(KeyPart::Secret)
        };
        prop_assert_eq!(refusal(&apikey::from_parts(&id, &secret)), Err(expected));
    }

    #[test]
    fn a_foreign_character_anywhere_is_refused(
        id in public_id(),
        secret in secret(),
        at in 0..(PUBLIC_ID_LEN + SECRET_LEN),
        replace in any::<bool>(),
        c in foreign_char(),
    ) {
        // Put `c` in place of, or next to, the character at `at` of the id
        // followed by the secret.
        let (mut id, mut secret) = (id, secret);
        let (part, target, offset) = if at < PUBLIC_ID_LEN {
            (KeyPart::PublicId, &mut id, at)
        } else {
            (KeyPart::Secret, &mut secret, at - PUBLIC_ID_LEN)
        };
        if replace {
            target.replace_range(offset..=offset, c.encode_utf8(&mut [0; 4]));
        } else {
            target.insert(offset, c);
        }
        prop_assert_eq!(
            refusal(&apikey::from_parts(&id, &secret)),
            Err(KeyFormatError::BadCharacter(part))
        );
    }

    #[test]
    fn a_case_change_in_the_public_id_is_refused(
        id in "[a-z0-9]{0,11}[a-z]",
        secret in secret(),
        at in 0..PUBLIC_ID_LEN,
    ) {
        let mut chars: Vec<char> = id.chars().collect();
        let Some(pos) = (at..chars.len()).chain(0..at).find(|&i| chars[i].is_ascii_lowercase()) else {
            return Err(TestCaseError::reject("no letter"));
        };
        chars[pos] = chars[pos].to_ascii_uppercase();
        let id: String = chars.into_iter().collect();
        prop_assert_eq!(
            refusal(&apikey::from_parts(&id, &secret)),
            Err(KeyFormatError::BadCharacter(KeyPart::PublicId))
        );
    }

    #[test]
    fn an_extra_underscore_changes_the_shape(
        id in public_id(),
        secret in secret(),
        at in 0..=(PUBLIC_ID_LEN + 1 + SECRET_LEN),
    ) {
        let mut key = apikey::from_parts(&id, &secret);
        key.insert(apikey::PREFIX.len() + at, '_');
        prop_assert_eq!(refusal(&key), Err(KeyFormatError::WrongShape));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// `generate` draws from the OS's randomness, not proptest's, so each case
    /// is simply one more generated key.
    #[test]
    fn generated_keys_round_trip(_case in 0..1u8) {
        let key = apikey::generate();
        let full = key.secret.expose_secret();
        let parsed = apikey::parse(full).unwrap();
        prop_assert_eq!(parsed.public_id, key.public_id.as_str());
        prop_assert_eq!(parsed.hash(), key.secret_hash);
        prop_assert_eq!(apikey::from_parts(parsed.public_id, parsed.secret), full);

        let rotated = apikey::generate_for(&key.public_id);
        let reparsed = apikey::parse(rotated.secret.expose_secret()).unwrap();
        prop_assert_eq!(reparsed.public_id, key.public_id.as_str());
        prop_assert_ne!(reparsed.hash(), key.secret_hash);
    }
}
