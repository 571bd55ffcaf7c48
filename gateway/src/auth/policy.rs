//! What a token must carry besides a good signature: `iss`, `aud`, and the clock skew
//! tolerated on `exp` and `nbf`.

use jsonwebtoken::{Algorithm, Validation};

/// What tokens must carry besides a good signature.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    pub leeway_seconds: u64,
}

impl Policy {
    pub(super) fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        let mut required = vec!["exp", "sub"];
        v.leeway = self.leeway_seconds;
        v.validate_nbf = true;
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
            required.push("iss");
        }
        match &self.audience {
            Some(aud) => {
                v.set_audience(&[aud]);
                required.push("aud");
            }
            // Without a configured audience, `aud` is not ours to judge.
            None => v.validate_aud = false,
        }
        v.set_required_spec_claims(&required);
        v
    }
}
