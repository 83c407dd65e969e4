//! The CLI's one error type, [`CliError`], and how each kind is shown and
//! which exit code it gives. A refusal shows the API's RFC 9457 problem as a
//! person reads it (title, detail, each field error, and a hint where one
//! helps, such as how to log in after a 401), never a stack trace.
//!
//! A problem document is parsed leniently: an answer that is not one (a
//! proxy's HTML 502, say) still becomes a [`Problem`] with the HTTP reason
//! as its title and the start of the body as its detail.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::exit::Exit;

/// One field the API refused.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct FieldError {
    #[serde(default)]
    pub field: String,
    #[serde(default)]
    pub message: String,
}

/// An `application/problem+json` body (the fields the CLI shows).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Problem {
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub status: u16,
    #[serde(default)]
    pub detail: String,
    #[serde(default)]
    pub code: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

impl Problem {
    /// The problem in an error answer of `status` whose body is `body`.
    pub fn from_answer(status: u16, body: &str) -> Self {
        let parsed = serde_json::from_str::<Value>(body)
            .ok()
            .filter(|v| v.get("title").is_some() || v.get("code").is_some())
            .and_then(|v| serde_json::from_value::<Problem>(v).ok());
        let mut problem = parsed.unwrap_or_else(|| Problem {
            title: String::new(),
            status,
            detail: body.chars().take(300).collect::<String>().trim().to_owned(),
            code: String::new(),
            errors: Vec::new(),
        });
        problem.status = status;
        if problem.title.is_empty() {
            problem.title = reqwest::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("Error")
                .to_owned();
        }
        problem
    }

    /// A refusal the CLI makes itself, worded like the API's.
    pub fn local(status: u16, code: &str, title: &str, detail: impl Into<String>) -> Self {
        Self {
            title: title.to_owned(),
            status,
            detail: detail.into(),
            code: code.to_owned(),
            errors: Vec::new(),
        }
    }

    /// `title (status code)`, the detail, then one line per field error.
    pub fn render(&self) -> String {
        let mut out = format!("error: {}", self.title);
        match (self.status, self.code.as_str()) {
            (0, "") => {}
            (status, "") => out.push_str(&format!(" ({status})")),
            (status, code) => out.push_str(&format!(" ({status} {code})")),
        }
        // invalid_request's detail is the field errors joined: say them once.
        let detail_is_fields = !self.errors.is_empty()
            && self.detail
                == self
                    .errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; ");
        if !self.detail.is_empty() && !detail_is_fields {
            out.push_str(&format!("\n  {}", self.detail));
        }
        for error in &self.errors {
            out.push_str(&format!("\n  - {}: {}", error.field, error.message));
        }
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line, or a file it names, is unusable (exit 64).
    #[error("{0}")]
    Usage(String),
    /// The API refused (4xx; exit 4).
    #[error("{}", .problem.render())]
    Refused {
        problem: Box<Problem>,
        /// The API's own JSON, printed as is with `--output json`.
        body: Option<Value>,
    },
    /// The API failed (5xx; exit 5).
    #[error("{}", .problem.render())]
    Server {
        problem: Box<Problem>,
        body: Option<Value>,
    },
    /// No answer at all (exit 5).
    #[error("cannot reach the API at {url}: {cause}")]
    Unreachable { url: String, cause: String },
    /// An answer that is not what the API sends (exit 5).
    #[error("unexpected answer from {url}: {cause}")]
    BadAnswer { url: String, cause: String },
}

impl CliError {
    pub fn usage(message: impl Into<String>) -> Self {
        CliError::Usage(message.into())
    }

    pub fn exit(&self) -> Exit {
        match self {
            CliError::Usage(_) => Exit::Usage,
            CliError::Refused { .. } => Exit::Refused,
            CliError::Server { .. } | CliError::Unreachable { .. } | CliError::BadAnswer { .. } => {
                Exit::Unreachable
            }
        }
    }

    /// Whether asking again later may succeed (no answer, or a 5xx).
    pub fn is_transient(&self) -> bool {
        matches!(self, CliError::Unreachable { .. } | CliError::Server { .. })
    }

    /// What helps after this error, if anything.
    pub fn hint(&self) -> Option<String> {
        match self {
            CliError::Refused { problem, .. } if problem.status == 401 => Some(
                "log in with `opsqueue login --url URL --token-file FILE` (a key from \
                 `opsqueue-api keys create --name NAME --scope write`), or pass --token-file, \
                 or set OPSQUEUE_TOKEN"
                    .into(),
            ),
            CliError::Refused { problem, .. } if problem.code == "forbidden" => Some(
                "this key's scope does not allow it: use a key with the write or admin scope"
                    .into(),
            ),
            CliError::Unreachable { cause, .. } if cause.contains("certificate") => Some(
                "the server's certificate is not trusted: pass --ca-cert with its PEM (or its CA's), \
                 or set OPSQUEUE_CA_CERT"
                    .into(),
            ),
            CliError::Unreachable { .. } => Some(
                "is the API running? The URL comes from --url, else OPSQUEUE_URL, else \
                 ~/.config/opsqueue/config.toml (`opsqueue login`)"
                    .into(),
            ),
            _ => None,
        }
    }

    /// The message and hint as a person reads them on stderr.
    pub fn render(&self) -> String {
        let mut text = match self {
            CliError::Refused { .. } | CliError::Server { .. } => self.to_string(),
            other => format!("error: {other}"),
        };
        if let Some(hint) = self.hint() {
            text.push_str(&format!("\nhint: {hint}"));
        }
        text
    }

    /// The API's own JSON of a refusal or server error, if it sent one.
    pub fn body(&self) -> Option<&Value> {
        match self {
            CliError::Refused { body, .. } | CliError::Server { body, .. } => body.as_ref(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_shows_its_title_code_detail_and_each_field() {
        let body = r#"{"type":"urn:opsqueue:problem:invalid_request","title":"Invalid request",
            "status":422,"detail":"target: bad; priority: must be between 0 and 9, got 12",
            "code":"invalid_request","errors":[{"field":"target","message":"bad"},
            {"field":"priority","message":"must be between 0 and 9, got 12"}]}"#;
        let text = Problem::from_answer(422, body).render();
        assert_eq!(
            text,
            "error: Invalid request (422 invalid_request)\n  - target: bad\n  - priority: must be between 0 and 9, got 12"
        );
    }

    #[test]
    fn a_problem_without_fields_shows_its_detail() {
        let body =
            r#"{"title":"Not found","status":404,"detail":"no operation x","code":"not_found"}"#;
        assert_eq!(
            Problem::from_answer(404, body).render(),
            "error: Not found (404 not_found)\n  no operation x"
        );
    }

    #[test]
    fn an_answer_that_is_not_a_problem_still_reads_well() {
        let problem = Problem::from_answer(502, "<html>bad gateway</html>");
        assert_eq!(problem.title, "Bad Gateway");
        assert_eq!(problem.detail, "<html>bad gateway</html>");
        assert_eq!(
            problem.render(),
            "error: Bad Gateway (502)\n  <html>bad gateway</html>"
        );
    }

    #[test]
    fn a_401_says_how_to_log_in() {
        let error = CliError::Refused {
            problem: Box::new(Problem::from_answer(
                401,
                r#"{"title":"Unauthorized","code":"unauthorized"}"#,
            )),
            body: None,
        };
        assert_eq!(error.exit(), Exit::Refused);
        assert!(
            error.render().contains("opsqueue login"),
            "{}",
            error.render()
        );
    }
}
