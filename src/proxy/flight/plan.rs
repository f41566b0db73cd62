//! What a Flight call needs: the database named by the request metadata
//! (Flight SQL), and the permissions a decoded DoGet ticket requires —
//! read on its database, and for InfluxQL what the one InfluxQL rule
//! ([`influxql_plan`]) says, admin statements refused as on `/query`.

use http::HeaderMap;

use super::sql::{Command, Descriptor};
use super::ticket::{Query, Ticket};
use crate::authz::Need;
use crate::proxy::classify::sql::sql_plan;
use crate::proxy::classify::{Dialect, Plan, influxql_plan};
use crate::proxy::reject::Rejection;

/// Metadata keys naming the database, as InfluxDB 3 reads them.
pub const DATABASE_METADATA: [&str; 4] =
    ["database", "bucket", "bucket-name", "iox-namespace-name"];

/// The database the request metadata names: every value of every key in
/// [`DATABASE_METADATA`] must agree (several different ones would let the
/// proxy and the database each pick another); `None` when there is none.
pub fn metadata_database(headers: &HeaderMap) -> Result<Option<String>, Rejection> {
    let mut found: Option<String> = None;
    for key in DATABASE_METADATA {
        for value in headers.get_all(key) {
            let value = value.to_str().map_err(|_| {
                Rejection::BadRequest(format!("metadata {key:?} is not printable ASCII"))
            })?;
            if value.is_empty() {
                return Err(Rejection::BadRequest(format!("metadata {key:?} is empty")));
            }
            match &found {
                Some(db) if db != value => {
                    return Err(Rejection::BadRequest(
                        "the request metadata names more than one database".to_owned(),
                    ));
                }
                Some(_) => {}
                None => found = Some(value.to_owned()),
            }
        }
    }
    Ok(found)
}

/// The permissions `ticket` needs.
pub fn ticket_needs(ticket: &Ticket) -> Result<Vec<Need>, Rejection> {
    match &ticket.query {
        Query::Sql(sql) => plan_needs(sql_plan(&ticket.database, sql)?),
        Query::FlightSql(command) => command_needs(&ticket.database, command),
        // The ticket's database scopes the query (InfluxDB checks it
        // exists and runs against it), whatever the statements name.
        Query::InfluxQl(text) => plan_needs(influxql_plan(
            text,
            Some(&ticket.database),
            None,
            Dialect::V3,
        )?),
    }
}

/// The permissions a Flight SQL command run against `database` needs:
/// read on it, and what its SQL, if any, needs beyond it.
pub fn command_needs(database: &str, command: &Command) -> Result<Vec<Need>, Rejection> {
    match command.sql() {
        Some(sql) => plan_needs(sql_plan(database, sql)?),
        None => Ok(vec![Need::read(database)]),
    }
}

/// The metadata key InfluxDB 3 reads for the language of a GetFlightInfo
/// statement query.
pub const QUERY_LANGUAGE_METADATA: &str = "x-influxdata-query-language";

/// The permissions a GetFlightInfo for `descriptor` on `database` needs.
/// InfluxDB plans a statement query as InfluxQL when the first
/// [`QUERY_LANGUAGE_METADATA`] value says so (in any case); the proxy reads
/// it both ways when any value does. (Planning returns a schema and a
/// ticket, which DoGet decides again.)
pub fn descriptor_needs(
    headers: &HeaderMap,
    database: &str,
    descriptor: &Descriptor,
) -> Result<Vec<Need>, Rejection> {
    let Descriptor::Command(command) = descriptor else {
        return Ok(vec![Need::read(database)]);
    };
    let mut needs = command_needs(database, command)?;
    let influxql = headers
        .get_all(QUERY_LANGUAGE_METADATA)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"influxql"));
    if let (true, Command::Statement(statement)) = (influxql, command) {
        let plan = influxql_plan(&statement.query, Some(database), None, Dialect::V3)?;
        for need in plan_needs(plan)? {
            if !needs.contains(&need) {
                needs.push(need);
            }
        }
    }
    Ok(needs)
}

fn plan_needs(plan: Plan) -> Result<Vec<Need>, Rejection> {
    match plan {
        Plan::Needs(needs) => Ok(needs),
        Plan::Refused(message) => Err(Rejection::Admin(message)),
        // Refused by `influxql_plan` (SHOW DATABASES is answered only on
        // /query, where the answer can be filtered); kept total.
        Plan::ShowDatabases => Err(Rejection::Admin(
            "SHOW DATABASES is not allowed over Flight; use /query".to_owned(),
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::proxy::flight::ticket::Form;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn metadata_rules() {
        assert_eq!(metadata_database(&headers(&[])).unwrap(), None);
        assert_eq!(
            metadata_database(&headers(&[("database", "a"), ("bucket-name", "a")])).unwrap(),
            Some("a".to_owned())
        );
        assert_eq!(
            metadata_database(&headers(&[("iox-namespace-name", "n")])).unwrap(),
            Some("n".to_owned())
        );
        for conflicting in [
            &[("database", "a"), ("bucket", "b")][..],
            &[("database", "a"), ("database", "b")][..],
            &[("database", "")][..],
        ] {
            assert!(matches!(
                metadata_database(&headers(conflicting)),
                Err(Rejection::BadRequest(_))
            ));
        }
    }

    fn ticket(db: &str, query: Query) -> Ticket {
        Ticket {
            form: Form::Json(Default::default()),
            database: db.to_owned(),
            query,
        }
    }

    #[test]
    fn influxql_names_other_databases() {
        let needs = ticket_needs(&ticket(
            "a",
            Query::InfluxQl(r#"SELECT * FROM "b"."autogen"."m"; SELECT * INTO c..m FROM m"#.into()),
        ))
        .unwrap();
        assert_eq!(
            needs,
            vec![Need::read("a"), Need::read("b"), Need::write("c")]
        );
        assert_eq!(
            ticket_needs(&ticket("a", Query::Sql("SELECT 1".into()))).unwrap(),
            vec![Need::read("a")]
        );
        for refused in ["DROP DATABASE a", "CREATE USER x WITH PASSWORD 'y'"] {
            assert!(matches!(
                ticket_needs(&ticket("a", Query::InfluxQl(refused.into()))),
                Err(Rejection::Admin(_))
            ));
        }
        assert!(ticket_needs(&ticket("a", Query::InfluxQl("SHOW DATABASES".into()))).is_err());
        assert!(matches!(
            ticket_needs(&ticket("a", Query::InfluxQl("SELEKT".into()))),
            Err(Rejection::BadRequest(_))
        ));
    }
}
