//! Fuzzes the API key parser with arbitrary strings.
//!
//! Checks: no panic; an accepted key is exactly `obk_<public id>_<secret>` with
//! parts of the documented lengths and alphabets; a refusal's message is one
//! of the fixed messages, so it never carries any part of the input.

#![no_main]

use libfuzzer_sys::fuzz_target;
use obleth_config::apikey::{self, KeyFormatError, KeyPart, PUBLIC_ID_LEN, SECRET_LEN};

fuzz_target!(|data: &[u8]| {
    let input = String::from_utf8_lossy(data);
    match apikey::parse(&input) {
        Ok(key) => {
            assert_eq!(apikey::from_parts(key.public_id, key.secret), input);
            assert_eq!(key.public_id.len(), PUBLIC_ID_LEN);
            assert_eq!(key.secret.len(), SECRET_LEN);
            assert!(key
                .public_id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
            assert!(key.secret.bytes().all(|b| b.is_ascii_alphanumeric()));
        }
        Err(err) => {
            let fixed = [
                KeyFormatError::WrongPrefix,
                KeyFormatError::WrongShape,
                KeyFormatError::BadCharacter(KeyPart::PublicId),
                KeyFormatError::BadCharacter(KeyPart::Secret),
                KeyFormatError::WrongLength(KeyPart::PublicId),
                KeyFormatError::WrongLength(KeyPart::Secret),
            ];
            assert!(fixed.contains(&err));
            let message = err.to_string();
            assert!(fixed.iter().any(|f| f.to_string() == message));
        }
    }
});
