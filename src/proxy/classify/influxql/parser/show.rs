//! The `SHOW` statements: the per-database listings (measurements,
//! series, tag and field keys and values), which read what they list, and
//! the server-wide ones, which are administration or refused.

use std::borrow::Cow;

use super::super::lexer::Tok;
use super::super::{DbRef, ScanError, Statement};
use super::admin::{QUERIES, SERVER, SUBSCRIPTIONS, USERS, every};
use super::{Parser, note, unexpected};
use crate::authz::Action;

impl Parser<'_> {
    /// A `SHOW` statement, the `SHOW` keyword consumed.
    pub(super) fn show(&mut self) -> Result<Statement, ScanError> {
        let word = match self.bump()? {
            Tok::Keyword(_, listed) => listed,
            other => return Err(ScanError::Unsupported(format!("SHOW {}", other.describe()))),
        };
        match word {
            "DATABASES" => return Ok(Statement::ShowDatabases),
            "RETENTION" => {
                self.expect_kw("POLICIES")?;
                // Schema, not data: database tokens that read, and
                // management tokens, may list them.
                let db = if self.eat_kw("ON")? {
                    DbRef::Named(self.database()?)
                } else {
                    DbRef::Default
                };
                return self.admin_rest("SHOW RETENTION POLICIES", vec![(db, Action::ReadSchema)]);
            }
            "MEASUREMENTS" => {}
            "MEASUREMENT" => {
                self.eat_kw("EXACT")?;
                self.expect_kw("CARDINALITY")?;
            }
            "SERIES" => {
                self.eat_kw("EXACT")?;
                self.eat_kw("CARDINALITY")?;
            }
            "TAG" | "FIELD" => {
                if self.eat_kw("KEY")? {
                    self.eat_kw("EXACT")?;
                    self.expect_kw("CARDINALITY")?;
                } else if word == "TAG" && self.eat_kw("VALUES")? {
                    if self.eat_kw("EXACT")? {
                        self.expect_kw("CARDINALITY")?;
                    } else {
                        self.eat_kw("CARDINALITY")?;
                    }
                } else {
                    self.expect_kw("KEYS")?;
                }
            }
            "USERS" | "GRANTS" => return self.refused(&format!("SHOW {word}"), USERS),
            "QUERIES" => return self.refused("SHOW QUERIES", QUERIES),
            "SUBSCRIPTIONS" => return self.refused("SHOW SUBSCRIPTIONS", SUBSCRIPTIONS),
            "STATS" | "DIAGNOSTICS" => return self.refused(&format!("SHOW {word}"), SERVER),
            // Every database's layout: schema of them all.
            "SHARDS" => return self.admin_rest("SHOW SHARDS", every(Action::ReadSchema)),
            "SHARD" => {
                self.expect_kw("GROUPS")?;
                return self.admin_rest("SHOW SHARD GROUPS", every(Action::ReadSchema));
            }
            "CONTINUOUS" => {
                self.expect_kw("QUERIES")?;
                return self.admin_rest("SHOW CONTINUOUS QUERIES", every(Action::ReadSchema));
            }
            _ => return Err(ScanError::Unsupported(format!("SHOW {word}"))),
        }
        self.show_clauses()?;
        Ok(self.data())
    }

    /// Clauses of the per-database SHOW statements, in InfluxDB's order. Each
    /// statement accepts a subset; accepting the union is harmless because
    /// InfluxDB rejects the extra clauses before running anything.
    fn show_clauses(&mut self) -> Result<(), ScanError> {
        let mut db = None;
        if self.eat_kw("ON")? {
            let got = self.bump()?;
            if got == Tok::Op("*") {
                return Err(ScanError::WildcardDatabase);
            }
            let name = got.name().ok_or_else(|| unexpected(&got, "database"))?;
            db = Some(name.clone().into_owned());
            // SHOW MEASUREMENTS ON db.rp / db.*
            let mut policy = String::new();
            if self.eat(&Tok::Dot)? {
                let rp_ok = |t: &Tok<'_>| t.is_ident() || *t == Tok::Op("*");
                let rp = self.expect_if(rp_ok, "retention policy")?;
                policy = rp.name().map_or_else(|| "*".to_owned(), Cow::into_owned);
            }
            self.scope(&name, &policy, false);
        }
        note(&mut self.reads, DbRef::from_name(db.as_deref()));
        if self.eat_kw("FROM")? {
            self.sources(false)?;
        }
        if self.eat_kw("WITH")? {
            if self.eat_kw("MEASUREMENT")? {
                let eq = |t: &Tok<'_>| *t == Tok::Op("=") || *t == Tok::Op("=~");
                self.expect_if(eq, "'=' or '=~'")?;
                // Only a measurement filter: it adds a read only if it names a database.
                if let Some(db @ DbRef::Named(_)) = self.source(false)? {
                    note(&mut self.reads, db);
                }
            } else {
                self.expect_kw("KEY")?;
                self.tag_key_filter()?;
            }
        }
        self.where_clause()?;
        self.group_by()?;
        self.order_by()?;
        for kw in ["LIMIT", "OFFSET", "SLIMIT", "SOFFSET"] {
            self.opt_int(kw)?;
        }
        Ok(())
    }

    fn tag_key_filter(&mut self) -> Result<(), ScanError> {
        let op = self.bump()?;
        match op {
            t if t.is_kw("IN") => {
                self.expect(&Tok::LParen, "'('")?;
                self.comma_list(|p| p.ident().map(drop))?;
                self.expect(&Tok::RParen, "')'")
            }
            Tok::Op("=" | "!=") => self.ident().map(drop),
            Tok::Op("=~" | "!~") => self.regex_operand(),
            other => Err(unexpected(&other, "IN, '=', '!=', '=~' or '!~'")),
        }
    }
}
