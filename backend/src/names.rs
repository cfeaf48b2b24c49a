//! Names of the objects a user makes and refers to by name (datasets, runs, models): one check,
//! whose messages name the kind of object.

use crate::error::{Error, Result};

/// Longest name, in characters (also a CHECK in the schema).
pub const MAX_NAME_CHARS: usize = 200;

/// Trims and checks the name of a `kind` of object (dataset, run, model): the message names it.
pub fn validate_name(kind: &str, name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(Error::BadRequest(format!("name: a {kind} needs a name")));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(Error::BadRequest(format!(
            "name: a {kind} name is at most {MAX_NAME_CHARS} characters"
        )));
    }
    if name.chars().all(|c| c.is_ascii_digit()) {
        return Err(Error::BadRequest(format!(
            "name: '{name}' is all digits, which would read as a {kind} id"
        )));
    }
    if name.contains('/') {
        return Err(Error::BadRequest(format!(
            "name: a {kind} name cannot contain '/' ('{name}')"
        )));
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_messages_name_the_kind() {
        assert_eq!(validate_name("dataset", "  gsm8k ").unwrap(), "gsm8k");
        let message = |kind, name: &str| validate_name(kind, name).unwrap_err().to_string();
        assert_eq!(message("dataset", " "), "name: a dataset needs a name");
        assert!(message("run", "123").contains("all digits, which would read as a run id"));
        assert_eq!(
            message("model", &"x".repeat(201)),
            "name: a model name is at most 200 characters"
        );
        assert_eq!(
            message("run", "a/b"),
            "name: a run name cannot contain '/' ('a/b')"
        );
    }
}
