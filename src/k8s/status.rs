//! Kubernetes `Status` bodies for the answers lite-apiserver gives itself.
//!
//! Clients (client-go, kubectl, the Python client) decode any non-2xx JSON body
//! as a `meta/v1 Status`, so every error we produce has that shape, with the
//! same `reason` strings the real apiserver uses.

/// A `Status` answer: HTTP code, machine-readable reason and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The HTTP status code, also written as `code` in the body.
    pub code: u16,
    /// A `metav1.StatusReason` such as `NotFound` or `ServiceUnavailable`.
    pub reason: &'static str,
    /// Human-readable explanation. Our answers never carry `Retry-After`:
    /// client-go retries 429/5xx answers that do (up to 10 times), which
    /// only stalls a client whose answer cannot change until the cloud is
    /// back, and its own loops (kubelet's) already retry.
    pub message: String,
}

impl Status {
    /// A Status with the given code, reason and message.
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Status {
        Status {
            code,
            reason,
            message: message.into(),
        }
    }

    /// 404 NotFound.
    pub fn not_found(message: impl Into<String>) -> Status {
        Status::new(404, "NotFound", message)
    }

    /// 403 Forbidden.
    pub fn forbidden(message: impl Into<String>) -> Status {
        Status::new(403, "Forbidden", message)
    }

    /// 503 ServiceUnavailable.
    pub fn unavailable(message: impl Into<String>) -> Status {
        Status::new(503, "ServiceUnavailable", message)
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Status {
        Status::new(400, "BadRequest", message)
    }

    /// The JSON body.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(160 + self.message.len());
        out.push_str(
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":""#,
        );
        crate::json::escape_into(&self.message, &mut out);
        out.push_str(r#"","reason":""#);
        out.push_str(self.reason);
        out.push_str(r#"","code":"#);
        out.push_str(&self.code.to_string());
        out.push_str("}\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_body_is_a_kubernetes_status() {
        let body = Status::not_found("pods \"web-1\" not found (offline)").to_json();
        assert_eq!(
            body,
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\
             \"message\":\"pods \\\"web-1\\\" not found (offline)\",\"reason\":\"NotFound\",\"code\":404}\n"
        );
    }
}
