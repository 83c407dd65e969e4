//! Payload fields on the command line, httpie's convention: `key=value` is
//! the JSON string `"value"`, `key:=json` is the JSON after `:=` (a number,
//! `true`, an array, an object…). The first `=` splits key from value, so a
//! value may itself contain `=` (`url=http://x/?a=b`). Nested keys are not
//! supported; pass the whole object with `key:={…}`.

use serde_json::{Map, Value};

/// One `key=value` or `key:=json` argument.
pub fn parse_field(arg: &str) -> Result<(String, Value), String> {
    let Some(eq) = arg.find('=') else {
        return Err(format!(
            "{arg:?} is not a field: write key=value (a string) or key:=json"
        ));
    };
    let (key, value, json) = match arg[..eq].strip_suffix(':') {
        Some(key) => (key, &arg[eq + 1..], true),
        None => (&arg[..eq], &arg[eq + 1..], false),
    };
    if key.is_empty() {
        return Err(format!("{arg:?} has no key before the ="));
    }
    let value = if json {
        serde_json::from_str(value)
            .map_err(|e| format!("{key}:= takes JSON ({e}); for a string write {key}={value}"))?
    } else {
        Value::String(value.to_owned())
    };
    Ok((key.to_owned(), value))
}

/// The fields as one JSON object; a key given twice keeps its last value.
pub fn object(fields: &[(String, Value)]) -> Map<String, Value> {
    fields.iter().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn equals_makes_a_string_and_colon_equals_parses_json() {
        assert_eq!(
            parse_field("name=web").unwrap(),
            ("name".into(), json!("web"))
        );
        assert_eq!(
            parse_field("seconds:=2").unwrap(),
            ("seconds".into(), json!(2))
        );
        assert_eq!(
            parse_field("child:=true").unwrap(),
            ("child".into(), json!(true))
        );
        assert_eq!(
            parse_field(r#"args:=["a","b"]"#).unwrap(),
            ("args".into(), json!(["a", "b"]))
        );
        assert_eq!(parse_field("n=2").unwrap(), ("n".into(), json!("2")));
    }

    #[test]
    fn the_first_equals_sign_splits() {
        assert_eq!(
            parse_field("url=http://x/?a=b").unwrap(),
            ("url".into(), json!("http://x/?a=b"))
        );
        assert_eq!(parse_field("empty=").unwrap(), ("empty".into(), json!("")));
    }

    #[test]
    fn what_is_not_a_field_is_refused_with_the_convention() {
        assert!(parse_field("seconds").unwrap_err().contains("key=value"));
        assert!(parse_field("=x").is_err());
        assert!(parse_field(":=1").is_err());
        assert!(
            parse_field("n:=not json")
                .unwrap_err()
                .contains("n=not json")
        );
    }

    #[test]
    fn a_repeated_key_keeps_its_last_value() {
        let fields = vec![("a".to_owned(), json!(1)), ("a".to_owned(), json!(2))];
        assert_eq!(Value::Object(object(&fields)), json!({"a": 2}));
    }
}
