//! Administrative statements (`CREATE`, `DROP`, `ALTER`, `DELETE`, the
//! admin `SHOW`s, and those refused for every token): the database each
//! acts on, read as InfluxDB's parser reads it (`influxql` parser.go,
//! `parseCreateDatabaseStatement` and its siblings), and the action it needs.

use std::borrow::Cow;

use super::super::lexer::Tok;
use super::super::{DbRef, ScanError, Statement};
use super::{Parser, set_of, unexpected};
use crate::authz::Action;

/// Why user and privilege statements are refused.
pub(super) const USERS: &str = "fluxgate's tokens replace database users and privileges; manage tokens with `fluxgate token` instead";
/// Why query management is refused.
pub(super) const QUERIES: &str =
    "queries of other clients cannot be listed or killed through the proxy";
/// Why subscriptions are refused.
pub(super) const SUBSCRIPTIONS: &str =
    "subscriptions copy every write to another host and are not available through the proxy";
/// Why server statistics are refused.
pub(super) const SERVER: &str = "server statistics are not available through the proxy";

/// One need on every database (server-wide administration).
pub(super) fn every(action: Action) -> Vec<(DbRef, Action)> {
    vec![(DbRef::Named(ALL.to_owned()), action)]
}

/// The name that stands for every database.
pub(super) const ALL: &str = crate::proto::ALL_DATABASES;

impl Parser<'_> {
    /// An administrative statement, its first keyword consumed: the
    /// database each one acts on is read from the statement as InfluxDB's
    /// parser reads it (`ON db`, the name itself, or the request's database).
    pub(super) fn admin(&mut self, first: &str) -> Result<Statement, ScanError> {
        let second = |p: &mut Self, options: &'static str| -> Result<&'static str, ScanError> {
            let got = p.bump()?;
            options
                .split(' ')
                .find(|o| got.is_kw(o))
                .ok_or_else(|| ScanError::Unsupported(format!("{first} {}", got.describe())))
        };
        match first {
            "GRANT" | "REVOKE" => self.refused(first, USERS),
            "CREATE" => match second(self, "DATABASE USER SUBSCRIPTION RETENTION CONTINUOUS")? {
                "DATABASE" => {
                    let db = self.database()?;
                    self.admin_rest("CREATE DATABASE", vec![(DbRef::Named(db), Action::Create)])
                }
                "RETENTION" => {
                    self.expect_kw("POLICY")?;
                    let db = self.retention_policy_on()?;
                    self.admin_rest("CREATE RETENTION POLICY", vec![(db, Action::Create)])
                }
                "CONTINUOUS" => {
                    self.expect_kw("QUERY")?;
                    self.continuous_query()
                }
                "USER" => self.refused("CREATE USER", USERS),
                _ => self.refused("CREATE SUBSCRIPTION", SUBSCRIPTIONS),
            },
            "DROP" => match second(
                self,
                "DATABASE USER SUBSCRIPTION RETENTION CONTINUOUS MEASUREMENT SERIES SHARD",
            )? {
                "DATABASE" => {
                    let db = self.database()?;
                    self.admin_rest("DROP DATABASE", vec![(DbRef::Named(db), Action::Delete)])
                }
                "RETENTION" => {
                    self.expect_kw("POLICY")?;
                    let db = self.retention_policy_on()?;
                    self.admin_rest("DROP RETENTION POLICY", vec![(db, Action::Delete)])
                }
                "CONTINUOUS" => {
                    self.expect_kw("QUERY")?;
                    self.ident()?;
                    self.expect_kw("ON")?;
                    let db = DbRef::Named(self.database()?);
                    self.admin_rest("DROP CONTINUOUS QUERY", vec![(db, Action::Delete)])
                }
                "MEASUREMENT" => {
                    self.ident()?;
                    self.admin_rest("DROP MEASUREMENT", vec![(DbRef::Default, Action::Delete)])
                }
                "SERIES" => self.delete("DROP SERIES"),
                // A shard of some database: only who may delete them all.
                "SHARD" => self.admin_rest("DROP SHARD", every(Action::Delete)),
                "USER" => self.refused("DROP USER", USERS),
                _ => self.refused("DROP SUBSCRIPTION", SUBSCRIPTIONS),
            },
            "DELETE" => self.delete("DELETE"),
            "ALTER" => {
                second(self, "RETENTION")?;
                self.expect_kw("POLICY")?;
                let db = self.retention_policy_on()?;
                self.admin_rest("ALTER RETENTION POLICY", vec![(db, Action::Create)])
            }
            "SET" => {
                second(self, "PASSWORD")?;
                self.refused("SET PASSWORD", USERS)
            }
            "KILL" => {
                second(self, "QUERY")?;
                self.refused("KILL QUERY", QUERIES)
            }
            other => Err(ScanError::Unsupported(other.to_owned())),
        }
    }

    /// A database name: an identifier (`*` is refused, as it is by InfluxDB
    /// in these positions).
    pub(super) fn database(&mut self) -> Result<String, ScanError> {
        let got = self.bump()?;
        if got == Tok::Op("*") {
            return Err(ScanError::WildcardDatabase);
        }
        got.name()
            .map(Cow::into_owned)
            .ok_or_else(|| unexpected(&got, "database name"))
    }

    /// `<rp> ON <db>` of the retention-policy statements (`ALTER` also takes
    /// `DEFAULT` as the policy's name).
    pub(super) fn retention_policy_on(&mut self) -> Result<DbRef, ScanError> {
        if !self.eat_kw("DEFAULT")? {
            self.ident()?;
        }
        self.expect_kw("ON")?;
        Ok(DbRef::Named(self.database()?))
    }

    /// `DELETE` and `DROP SERIES`: the request's database, and any database a
    /// source names (InfluxDB rejects those, but the proxy does not rely on it).
    pub(super) fn delete(&mut self, what: &'static str) -> Result<Statement, ScanError> {
        self.delete_clauses()?;
        let mut dbs = std::mem::take(&mut self.reads);
        dbs.push(DbRef::Default);
        let needs = set_of(dbs)
            .into_iter()
            .map(|db| (db, Action::Delete))
            .collect();
        self.admin_rest(what, needs)
    }

    /// A statement no token may run through the proxy.
    pub(super) fn refused(
        &mut self,
        what: &str,
        why: &'static str,
    ) -> Result<Statement, ScanError> {
        self.skip_rest()?;
        Ok(Statement::Refused {
            what: what.to_owned(),
            why,
        })
    }

    pub(super) fn delete_clauses(&mut self) -> Result<(), ScanError> {
        if self.eat_kw("FROM")? {
            self.sources(false)?;
        }
        self.where_clause()
    }

    /// `CREATE CONTINUOUS QUERY name ON db [RESAMPLE ...] BEGIN SELECT ... END`:
    /// creating it needs CREATE on `db`, and because InfluxDB runs it later
    /// with its own rights, also what its SELECT reads and writes (a
    /// statement naming no database means `db` there).
    pub(super) fn continuous_query(&mut self) -> Result<Statement, ScanError> {
        self.ident()?;
        self.expect_kw("ON")?;
        let db = self.database()?;
        loop {
            let got = self.bump()?;
            if got.is_kw("BEGIN") {
                break;
            }
            if matches!(got, Tok::Semi | Tok::Eof | Tok::Op("/")) {
                return Err(unexpected(&got, "BEGIN"));
            }
        }
        self.expect_kw("SELECT")?;
        self.select(true)?;
        self.expect_kw("END")?;
        let on = |r: DbRef| match r {
            DbRef::Default => DbRef::Named(db.clone()),
            named => named,
        };
        let mut needs = vec![(DbRef::Named(db.clone()), Action::Create)];
        needs.extend(
            set_of(std::mem::take(&mut self.reads))
                .into_iter()
                .map(|r| (on(r), Action::Read)),
        );
        needs.extend(
            set_of(std::mem::take(&mut self.writes))
                .into_iter()
                .map(|w| (on(w), Action::Write)),
        );
        self.admin_rest("CREATE CONTINUOUS QUERY", needs)
    }

    /// The remaining admin grammars hold only names, strings, numbers and
    /// keywords, so plain tokens up to `;` lex them the way InfluxDB does. A
    /// `/` has no place there; refusing it means no other parser (InfluxDB 3
    /// reads some admin forms differently) can see a regex we skipped as code.
    pub(super) fn admin_rest(
        &mut self,
        what: &str,
        needs: Vec<(DbRef, Action)>,
    ) -> Result<Statement, ScanError> {
        self.skip_rest()?;
        Ok(Statement::Admin {
            what: what.to_owned(),
            needs,
        })
    }

    pub(super) fn skip_rest(&mut self) -> Result<(), ScanError> {
        loop {
            match self.peek()? {
                Tok::Semi | Tok::Eof => return Ok(()),
                slash @ Tok::Op("/") => return Err(unexpected(slash, "end of statement")),
                _ => self.bump()?,
            };
        }
    }
}
