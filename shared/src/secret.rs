//! Secret payload fields (passwords, token secrets, an app's environment):
//! an action names them, and they are stored apart from the payload, shown
//! as [`MASK`] in every stored or returned payload, and put back only for
//! the worker that runs the action.

use serde_json::Value;

/// What a secret field reads as in every stored or returned payload.
pub const MASK: &str = "***";

/// Moves the top-level `fields` present in `payload` into a separate object,
/// leaving [`MASK`] in their place.
pub fn split_secrets(mut payload: Value, fields: &[&str]) -> (Value, Option<Value>) {
    let mut secrets = serde_json::Map::new();
    if let Some(object) = payload.as_object_mut() {
        for field in fields {
            if let Some(value) = object.get_mut(*field).filter(|v| !v.is_null()) {
                secrets.insert(
                    (*field).to_owned(),
                    std::mem::replace(value, Value::String(MASK.into())),
                );
            }
        }
    }
    (
        payload,
        (!secrets.is_empty()).then_some(Value::Object(secrets)),
    )
}

pub fn with_secrets(payload: &Value, secrets: Option<&Value>) -> Value {
    let mut payload = payload.clone();
    if let (Some(object), Some(Value::Object(secrets))) = (payload.as_object_mut(), secrets) {
        for (field, value) in secrets {
            object.insert(field.clone(), value.clone());
        }
    }
    payload
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_fields_are_stored_apart_and_put_back_for_the_worker() {
        let (payload, secrets) = split_secrets(
            json!({"user": "bob", "password": "s3cret", "note": null}),
            &["password", "note"],
        );
        assert_eq!(
            payload,
            json!({"user": "bob", "password": "***", "note": null})
        );
        assert_eq!(secrets, Some(json!({"password": "s3cret"})));
        assert_eq!(
            with_secrets(&payload, secrets.as_ref()),
            json!({"user": "bob", "password": "s3cret", "note": null})
        );
        let (payload, secrets) = split_secrets(json!({"user": "bob"}), &["password"]);
        assert_eq!((payload, secrets), (json!({"user": "bob"}), None));
    }
}
