//! The app file parser and validator: any text either fails with an error that
//! names the file, or is a catalog the GraphQL schema can be built from.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use livegate::catalog::Catalog;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Catalog::parse("fuzz.toml", text) {
        Ok(catalog) => {
            if let Err(e) = livegate::graphql::sdl(&Arc::new(catalog)) {
                panic!("a file the validator accepted builds no schema: {e:?}\n{text}");
            }
        }
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.contains("fuzz.toml"),
                "the error names the file: {message}"
            );
        }
    }
});
