//! Name derivation: collection and field keys (snake_case, as in the app file and the
//! database) to GraphQL names (PascalCase types, camelCase fields), per API.md §3.

use heck::{ToLowerCamelCase, ToPascalCase, ToShoutySnakeCase};

/// `chat_lines` -> `ChatLine`.
pub fn type_name_for(key: &str) -> String {
    let (head, last) = match key.rsplit_once('_') {
        Some((head, last)) => (format!("{head}_"), last),
        None => (String::new(), key),
    };
    format!("{head}{}", singular(last)).to_pascal_case()
}

/// `due_at` -> `dueAt`.
pub fn camel(key: &str) -> String {
    key.to_lower_camel_case()
}

/// `due_at` -> `DUE_AT` (enum values of `<Type>Field`).
pub fn shouty(key: &str) -> String {
    key.to_shouty_snake_case()
}

/// `ChatLine` -> `chatLine`.
pub fn lower_first(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// English singular of one lowercase word, by the common regular rules; irregular
/// nouns can set `type` in the app file instead.
fn singular(word: &str) -> String {
    let strip = |n: usize| word[..word.len() - n].to_string();
    if word.len() > 3 && word.ends_with("ies") {
        return format!("{}y", strip(3));
    }
    for suffix in ["sses", "shes", "ches", "xes", "zes"] {
        if word.ends_with(suffix) {
            return strip(2);
        }
    }
    if word.ends_with("ss") || word.ends_with("us") || word.ends_with("is") {
        return word.to_string();
    }
    if word.len() > 1 && word.ends_with('s') {
        return strip(1);
    }
    word.to_string()
}

/// `^[a-z][a-z0-9_]*$`, at most 63 bytes (PostgreSQL's identifier limit), no `__`, no
/// trailing `_`: keys become table and column names and camelCase GraphQL names, so
/// they must survive both round trips unchanged.
pub fn is_key(key: &str) -> bool {
    let bytes = key.as_bytes();
    !key.is_empty()
        && key.len() <= 63
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
        && !key.contains("__")
        && !key.ends_with('_')
}

/// `^[A-Z][A-Za-z0-9]*$`.
pub fn is_type_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !name.is_empty()
        && name.len() <= 63
        && bytes[0].is_ascii_uppercase()
        && bytes.iter().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_type_names() {
        assert_eq!(type_name_for("posts"), "Post");
        assert_eq!(type_name_for("chat_lines"), "ChatLine");
        assert_eq!(type_name_for("categories"), "Category");
        assert_eq!(type_name_for("boxes"), "Box");
        assert_eq!(type_name_for("addresses"), "Address");
        assert_eq!(type_name_for("status"), "Status");
        assert_eq!(type_name_for("news"), "New");
        assert_eq!(camel("due_at"), "dueAt");
        assert_eq!(shouty("due_at"), "DUE_AT");
        assert_eq!(lower_first("ChatLine"), "chatLine");
    }

    #[test]
    fn checks_identifiers() {
        assert!(is_key("chat_lines"));
        assert!(is_key("a1"));
        for bad in ["", "Posts", "1a", "a-b", "a__b", "a_", "_a", "põst"] {
            assert!(!is_key(bad), "{bad}");
        }
        assert!(is_type_name("ChatLine"));
        assert!(!is_type_name("chatLine"));
        assert!(!is_type_name("Chat_Line"));
    }
}
