//! Who is calling, and what they may do: KES identities and policies.
//!
//! - An [`Identity`] is the lowercase hex SHA-256 of a client certificate's DER
//!   SubjectPublicKeyInfo — independent of subject, issuer and validity. A KES
//!   [`ApiKey`] (`kes:v1:…`) is an Ed25519 seed whose public key gives an identity
//!   the same way.
//! - A [`Policy`] allows and denies request paths; deny wins. Patterns follow the
//!   era of the configuration they come from ([`PatternSyntax`]).
//! - [`Authorizer`] maps identities to their single policy, with one admin identity
//!   that bypasses policies.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod glob;
mod identity;

use std::collections::BTreeMap;

pub use identity::{ApiKey, ApiKeyError, CertError, ChainRule, Identity, identity_of_chain};

/// How policy patterns are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternSyntax {
    /// KES up to 2023 (configs without `version: v1`): Go's `path.Match` globs over
    /// the whole path. `*` matches within one segment, `?` one character, `[…]`
    /// classes, `\` escapes; `/v1/key/*/my-key` matches `/v1/key/create/my-key`.
    Glob,
    /// KES from 2023 (`version: v1` configs): a trailing `*` matches any suffix
    /// (including `/`); otherwise the pattern must equal the path. A `*` elsewhere is
    /// a literal.
    Prefix,
}

/// A pattern that cannot be used, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid policy pattern '{pattern}': {reason}")]
pub struct PatternError {
    /// The pattern as written.
    pub pattern: String,
    /// Why it is invalid.
    pub reason: &'static str,
}

/// One allow or deny pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    syntax: PatternSyntax,
}

impl Pattern {
    /// Parses a pattern, rejecting globs that Go's `path.Match` would reject.
    pub fn parse(text: &str, syntax: PatternSyntax) -> Result<Self, PatternError> {
        if syntax == PatternSyntax::Glob {
            glob::validate(text).map_err(|reason| PatternError {
                pattern: text.to_owned(),
                reason,
            })?;
        }
        Ok(Self {
            text: text.to_owned(),
            syntax,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the request path matches.
    pub fn matches(&self, path: &str) -> bool {
        match self.syntax {
            PatternSyntax::Glob => glob::matches(&self.text, path),
            PatternSyntax::Prefix => match self.text.strip_suffix('*') {
                Some(prefix) => path.starts_with(prefix),
                None => !self.text.is_empty() && self.text == path,
            },
        }
    }
}

/// A policy: the paths an identity may call.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    /// Paths allowed unless denied.
    pub allow: Vec<Pattern>,
    /// Paths always refused.
    pub deny: Vec<Pattern>,
}

impl Policy {
    /// Parses allow and deny lists.
    pub fn parse<S: AsRef<str>>(allow: &[S], deny: &[S], syntax: PatternSyntax) -> Result<Self, PatternError> {
        let parse = |list: &[S]| -> Result<Vec<Pattern>, PatternError> {
            list.iter().map(|p| Pattern::parse(p.as_ref(), syntax)).collect()
        };
        Ok(Self {
            allow: parse(allow)?,
            deny: parse(deny)?,
        })
    }

    /// Whether `path` is allowed: no deny pattern matches and an allow pattern does.
    pub fn allows(&self, path: &str) -> bool {
        !self.deny.iter().any(|p| p.matches(path)) && self.allow.iter().any(|p| p.matches(path))
    }
}

/// The outcome of an authorization check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The admin identity: every path.
    Admin,
    /// Allowed by the named policy.
    Allowed,
    /// No policy, or the policy does not allow the path.
    Denied,
}

/// Why a set of policies cannot be assembled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssignError {
    /// One identity in two policies.
    #[error("cannot assign policy '{policy}' to '{identity}': identity already has a policy")]
    Duplicate {
        /// The second policy.
        policy: String,
        /// The identity.
        identity: String,
    },
    /// No policy of that name.
    #[error("policy '{0}' does not exist")]
    UnknownPolicy(String),
    /// The admin identity in a policy.
    #[error("cannot assign policy '{policy}' to the admin identity '{identity}'")]
    Admin {
        /// The policy.
        policy: String,
        /// The identity.
        identity: String,
    },
}

/// The admin identity and the policy of every other identity.
#[derive(Debug, Clone, Default)]
pub struct Authorizer {
    admin: Option<Identity>,
    policies: BTreeMap<String, Policy>,
    assigned: BTreeMap<Identity, String>,
}

impl Authorizer {
    /// An authorizer with an admin (or none: `disabled`) and no policies.
    pub fn new(admin: Option<Identity>) -> Self {
        Self {
            admin,
            ..Self::default()
        }
    }

    /// Adds a policy and assigns it to `identities`.
    pub fn add(&mut self, name: &str, policy: Policy, identities: &[Identity]) -> Result<(), AssignError> {
        for identity in identities {
            if Some(identity) == self.admin.as_ref() {
                return Err(AssignError::Admin {
                    policy: name.to_owned(),
                    identity: identity.to_string(),
                });
            }
            if self.assigned.contains_key(identity) {
                return Err(AssignError::Duplicate {
                    policy: name.to_owned(),
                    identity: identity.to_string(),
                });
            }
        }
        for identity in identities {
            self.assigned.insert(identity.clone(), name.to_owned());
        }
        self.policies.insert(name.to_owned(), policy);
        Ok(())
    }

    /// Adds or replaces the policy `name`, keeping its assignments (KES v0.16's
    /// `/v1/policy/write`).
    pub fn set_policy(&mut self, name: &str, policy: Policy) {
        self.policies.insert(name.to_owned(), policy);
    }

    /// Removes the policy `name` and every assignment to it; whether it existed.
    pub fn remove_policy(&mut self, name: &str) -> bool {
        self.assigned.retain(|_, p| p != name);
        self.policies.remove(name).is_some()
    }

    /// Assigns the existing policy `name` to `identity`, replacing its previous one
    /// (KES v0.16's `/v1/identity/assign`).
    pub fn assign(&mut self, name: &str, identity: Identity) -> Result<(), AssignError> {
        if !self.policies.contains_key(name) {
            return Err(AssignError::UnknownPolicy(name.to_owned()));
        }
        if Some(&identity) == self.admin.as_ref() {
            return Err(AssignError::Admin {
                policy: name.to_owned(),
                identity: identity.to_string(),
            });
        }
        self.assigned.insert(identity, name.to_owned());
        Ok(())
    }

    /// Removes `identity`'s policy assignment; whether it had one.
    pub fn forget(&mut self, identity: &Identity) -> bool {
        self.assigned.remove(identity).is_some()
    }

    /// The admin identity, if enabled.
    pub fn admin(&self) -> Option<&Identity> {
        self.admin.as_ref()
    }

    /// The policy assigned to `identity`.
    pub fn policy_of(&self, identity: &Identity) -> Option<(&str, &Policy)> {
        let name = self.assigned.get(identity)?;
        self.policies.get(name).map(|p| (name.as_str(), p))
    }

    /// A policy by name.
    pub fn policy(&self, name: &str) -> Option<&Policy> {
        self.policies.get(name)
    }

    /// Every policy name, sorted.
    pub fn policy_names(&self) -> impl Iterator<Item = &str> {
        self.policies.keys().map(String::as_str)
    }

    /// Every identity with a policy, sorted.
    pub fn identities(&self) -> impl Iterator<Item = (&Identity, &str)> {
        self.assigned.iter().map(|(i, p)| (i, p.as_str()))
    }

    /// Whether `identity` may call `path`.
    pub fn authorize(&self, identity: &Identity, path: &str) -> Decision {
        if Some(identity) == self.admin.as_ref() {
            return Decision::Admin;
        }
        match self.policy_of(identity) {
            Some((_, policy)) if policy.allows(path) => Decision::Allowed,
            _ => Decision::Denied,
        }
    }
}

#[cfg(test)]
mod tests;
