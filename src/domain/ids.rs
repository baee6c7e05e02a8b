use std::fmt;

/// The plans of the catalog, by what the broker does for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Plan {
    DomainWithCdn,
    Domain,
    Certificate,
}

/// What an operation does to an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Provision,
    Update,
    Deprovision,
    Renew,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Provision => "provision",
            Action::Update => "update",
            Action::Deprovision => "deprovision",
            Action::Renew => "renew",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        [
            Action::Provision,
            Action::Update,
            Action::Deprovision,
            Action::Renew,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
