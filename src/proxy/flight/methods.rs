//! The Arrow Flight methods by name and gRPC path, and the operator's
//! allow-list (`--allow-flight-method`) of methods the proxy would otherwise
//! refuse.
//!
//! Only three methods have a rule of their own: `Handshake` (no check),
//! `DoGet` (the ticket names the database) and `GetFlightInfo` (the request
//! metadata names it). Every other Flight method can do things a read token
//! should not (DoPut writes, DoAction runs arbitrary server actions), so it
//! is refused unless the operator names it.

use std::fmt;

/// The gRPC path prefix of `arrow.flight.protocol.FlightService`.
pub const SERVICE_PATH: &str = "/arrow.flight.protocol.FlightService/";

/// A method of `arrow.flight.protocol.FlightService`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlightMethod {
    /// `Handshake`: authentication exchange; carries no database.
    Handshake,
    /// `ListFlights`.
    ListFlights,
    /// `GetFlightInfo` (Flight SQL's query entry point).
    GetFlightInfo,
    /// `PollFlightInfo`.
    PollFlightInfo,
    /// `GetSchema`.
    GetSchema,
    /// `DoGet`: the ticket says what to read.
    DoGet,
    /// `DoPut`: uploads data.
    DoPut,
    /// `DoExchange`: bidirectional data.
    DoExchange,
    /// `DoAction`: server-defined actions.
    DoAction,
    /// `ListActions`.
    ListActions,
}

impl FlightMethod {
    /// Every method, in the order of the service definition.
    pub const ALL: [FlightMethod; 10] = [
        FlightMethod::Handshake,
        FlightMethod::ListFlights,
        FlightMethod::GetFlightInfo,
        FlightMethod::PollFlightInfo,
        FlightMethod::GetSchema,
        FlightMethod::DoGet,
        FlightMethod::DoPut,
        FlightMethod::DoExchange,
        FlightMethod::DoAction,
        FlightMethod::ListActions,
    ];

    /// The method's name as in the gRPC path.
    pub fn name(self) -> &'static str {
        match self {
            FlightMethod::Handshake => "Handshake",
            FlightMethod::ListFlights => "ListFlights",
            FlightMethod::GetFlightInfo => "GetFlightInfo",
            FlightMethod::PollFlightInfo => "PollFlightInfo",
            FlightMethod::GetSchema => "GetSchema",
            FlightMethod::DoGet => "DoGet",
            FlightMethod::DoPut => "DoPut",
            FlightMethod::DoExchange => "DoExchange",
            FlightMethod::DoAction => "DoAction",
            FlightMethod::ListActions => "ListActions",
        }
    }

    /// The method a request path calls. gRPC paths are case-sensitive, so
    /// this matches exactly, as the upstream's router will.
    pub fn from_path(path: &str) -> Option<Self> {
        let name = path.strip_prefix(SERVICE_PATH)?;
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The method a configured name means (case-insensitive, for operators).
    pub fn from_name(name: &str) -> Option<Self> {
        let name = name.trim();
        Self::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(name))
    }

    /// Whether the method has its own authorization rule, so allow-listing it
    /// would mean nothing (and suggests a misunderstanding).
    fn has_own_rule(self) -> bool {
        matches!(
            self,
            FlightMethod::Handshake | FlightMethod::DoGet | FlightMethod::GetFlightInfo
        )
    }

    /// Whether the method can send data into the database: allow-listed, it
    /// then also needs write on the metadata database.
    pub fn can_write(self) -> bool {
        matches!(self, FlightMethod::DoPut | FlightMethod::DoExchange)
    }
}

impl fmt::Display for FlightMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A configured method name that cannot be allow-listed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllowListError {
    /// Not a FlightService method.
    #[error(
        "--allow-flight-method {0:?} is not an Arrow Flight method (one of DoPut, DoAction, DoExchange, ListFlights, ListActions, GetSchema, PollFlightInfo)"
    )]
    Unknown(String),
    /// A method that is always authorized by its own rule.
    #[error("--allow-flight-method {0}: {0} is always served with its own authorization rule")]
    HasOwnRule(FlightMethod),
}

/// The Flight methods the operator allowed beyond the built-in three.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList(Vec<FlightMethod>);

impl AllowList {
    /// Parses `--allow-flight-method` values. Unknown names and the three
    /// methods with their own rule are configuration errors, so a typo does
    /// not silently leave a method refused (or seem to open one).
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Self, AllowListError> {
        let mut methods = Vec::new();
        for name in names {
            let name = name.as_ref();
            if name.trim().is_empty() {
                continue;
            }
            let method = FlightMethod::from_name(name)
                .ok_or_else(|| AllowListError::Unknown(name.to_owned()))?;
            if method.has_own_rule() {
                return Err(AllowListError::HasOwnRule(method));
            }
            if !methods.contains(&method) {
                methods.push(method);
            }
        }
        Ok(Self(methods))
    }

    /// Whether `method` is allow-listed.
    pub fn allows(&self, method: FlightMethod) -> bool {
        self.0.contains(&method)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_exactly() {
        assert_eq!(
            FlightMethod::from_path("/arrow.flight.protocol.FlightService/DoGet"),
            Some(FlightMethod::DoGet)
        );
        assert_eq!(
            FlightMethod::from_path("/arrow.flight.protocol.FlightService/doget"),
            None
        );
        assert_eq!(
            FlightMethod::from_path("/arrow.flight.protocol.FlightService/DoGet/"),
            None
        );
        assert_eq!(
            FlightMethod::from_path("/grpc.health.v1.Health/Check"),
            None
        );
        for m in FlightMethod::ALL {
            assert_eq!(
                FlightMethod::from_path(&format!("{SERVICE_PATH}{m}")),
                Some(m)
            );
        }
    }

    #[test]
    fn allow_list_parsing() {
        let list = AllowList::parse(&["doput", " ListFlights", ""]).unwrap();
        assert!(list.allows(FlightMethod::DoPut));
        assert!(list.allows(FlightMethod::ListFlights));
        assert!(!list.allows(FlightMethod::DoAction));
        assert_eq!(
            AllowList::parse(&["DoSomething"]),
            Err(AllowListError::Unknown("DoSomething".to_owned()))
        );
        assert_eq!(
            AllowList::parse(&["DoGet"]),
            Err(AllowListError::HasOwnRule(FlightMethod::DoGet))
        );
        assert!(AllowList::parse::<&str>(&[]).unwrap() == AllowList::default());
    }
}
