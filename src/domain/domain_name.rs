use std::fmt;

/// A lower-case DNS hostname with at least two labels, optionally a wildcard
/// (`*.example.com`). IP addresses and underscores are refused.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomainName(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("'{input}' is not a valid domain name: {reason}")]
pub struct InvalidDomainName {
    pub input: String,
    pub reason: &'static str,
}

impl DomainName {
    pub fn parse(input: &str) -> Result<DomainName, InvalidDomainName> {
        let name = input.trim().trim_end_matches('.').to_ascii_lowercase();
        let fail = |reason| {
            Err(InvalidDomainName {
                input: input.trim().to_string(),
                reason,
            })
        };
        if name.is_empty() {
            return fail("it is empty");
        }
        if name.len() > 253 {
            return fail("it is longer than 253 characters");
        }
        let host = name.strip_prefix("*.").unwrap_or(&name);
        let labels: Vec<&str> = host.split('.').collect();
        if labels.len() < 2 {
            return fail("it needs at least two labels, like example.com");
        }
        for label in &labels {
            if label.is_empty() {
                return fail("it has an empty label");
            }
            if label.len() > 63 {
                return fail("a label is longer than 63 characters");
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return fail("only letters, digits, hyphens and a leading '*.' are allowed");
            }
            if label.starts_with('-') || label.ends_with('-') {
                return fail("a label starts or ends with a hyphen");
            }
        }
        if labels
            .last()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
        {
            return fail("an IP address is not a domain name");
        }
        Ok(DomainName(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_wildcard(&self) -> bool {
        self.0.starts_with("*.")
    }

    /// The name that DNS-01 validates: a wildcard is validated at its base.
    pub fn validation_base(&self) -> &str {
        self.0.strip_prefix("*.").unwrap_or(&self.0)
    }

    /// `_acme-challenge.<base>`: the record the user delegates to the broker.
    pub fn challenge_name(&self) -> String {
        format!("_acme-challenge.{}", self.validation_base())
    }

    /// Where the broker writes the TXT record: the user's challenge name
    /// under the broker's own zone.
    pub fn delegated_challenge_name(&self, root: &DomainName) -> String {
        format!("{}.{}", self.challenge_name(), root.as_str())
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_normalizes() {
        assert_eq!(
            DomainName::parse(" WWW.Example.COM. ").unwrap().as_str(),
            "www.example.com"
        );
        let wildcard = DomainName::parse("*.example.com").unwrap();
        assert!(wildcard.is_wildcard());
        assert_eq!(wildcard.challenge_name(), "_acme-challenge.example.com");
        let root = DomainName::parse("broker.test").unwrap();
        assert_eq!(
            DomainName::parse("a.example.com")
                .unwrap()
                .delegated_challenge_name(&root),
            "_acme-challenge.a.example.com.broker.test"
        );
    }

    #[test]
    fn refuses_what_is_not_a_hostname() {
        for bad in [
            "",
            "com",
            "a..b",
            "-a.com",
            "a-.com",
            "a_b.com",
            "1.2.3.4",
            "*.*.a.com",
            "a.*.com",
            "exa mple.com",
            "ex/ample.com",
            "a.com:80",
        ] {
            assert!(DomainName::parse(bad).is_err(), "{bad} was accepted");
        }
        assert!(DomainName::parse(&format!("{}.com", "a".repeat(64))).is_err());
    }
}
