//! `token list`, `management list` and `proxy-token list`: one helper that
//! fetches a listing page after page and prints each page as it arrives,
//! so a million tokens never sit in memory or in one gRPC message.
//!
//! - JSON: one valid array, written element by element (the same text as
//!   when the whole list was printed at once).
//! - Table: laid out for the first page (which, at the default page size,
//!   is the whole list up to 1000 tokens); later pages keep that layout,
//!   cutting wider descriptions and permissions with an ellipsis.
//!
//! Should a later page fail, what was printed stays printed (a JSON array
//! is then left open) and the command fails with the error's exit code.

use std::io::{self, Write};
use std::time::SystemTime;

use super::client::Client;
use super::error::CliError;
use super::output::{self, TokenView};
use super::show::ListKind;
use super::table::{self, TableLayout};
use crate::config::commands::{Format, ListArgs};
use crate::proto::tokens as pb;

/// The list command for tokens of `kind`: connects as `args` say, then
/// fetches every page of the listing and prints it to stdout.
pub async fn list(kind: ListKind, args: &ListArgs) -> Result<(), CliError> {
    let client = Client::open(&args.conn).await?;
    let mut printer = Printer::new(kind, args.format, output::width());
    let stdout = io::stdout();
    let mut page_token = String::new();
    loop {
        let page = fetch(&client, kind, args, page_token.clone()).await?;
        let last = page.next_page_token.is_empty();
        let views: Vec<TokenView> = page.tokens.into_iter().map(TokenView::from_wire).collect();
        // Locked per page (not held across the next call), and buffered:
        // stdout alone is line-buffered, one write(2) per line, which made
        // a million tokens in JSON (13 lines each) take 18 s instead of 5.
        let mut out = io::BufWriter::with_capacity(1 << 16, stdout.lock());
        let written = printer
            .page(&mut out, &views, SystemTime::now())
            .and_then(|()| {
                if last {
                    printer.finish(&mut out)
                } else {
                    Ok(())
                }
            })
            .and_then(|()| out.flush());
        match written {
            // `| head` closed the pipe: nothing more to fetch.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(CliError::other(format!("cannot write the output: {e}"))),
            Ok(()) => {}
        }
        if last {
            return Ok(());
        }
        if page.next_page_token == page_token {
            return Err(CliError::other(format!(
                "{}: the token service returned the same page token twice",
                doing(kind)
            )));
        }
        page_token = page.next_page_token;
    }
}

fn doing(kind: ListKind) -> &'static str {
    match kind {
        ListKind::Database => "cannot list database tokens",
        ListKind::Management => "cannot list management tokens",
        ListKind::Proxy => "cannot list proxy tokens",
    }
}

/// One page of the listing.
async fn fetch(
    client: &Client,
    kind: ListKind,
    args: &ListArgs,
    page_token: String,
) -> Result<pb::ListTokensResponse, CliError> {
    let message = pb::ListTokensRequest {
        include_revoked: args.include_revoked,
        page_size: args.page_size.unwrap_or(0),
        page_token,
    };
    client
        .call(doing(kind), |mut c| async move {
            match kind {
                ListKind::Database => c.list_database_tokens(message).await,
                ListKind::Management => c.list_management_tokens(message).await,
                ListKind::Proxy => c.list_proxy_tokens(message).await,
            }
        })
        .await
}

/// Prints a listing page by page.
#[derive(Debug)]
pub struct Printer {
    kind: ListKind,
    format: Format,
    width: usize,
    /// Tokens printed so far.
    printed: usize,
    /// The table's layout, from the first page with tokens.
    layout: Option<TableLayout>,
}

impl Printer {
    /// A listing of `kind` in `format`, tables laid out for `width` columns.
    pub fn new(kind: ListKind, format: Format, width: usize) -> Self {
        Self {
            kind,
            format,
            width,
            printed: 0,
            layout: None,
        }
    }

    /// Prints one page's tokens.
    pub fn page(
        &mut self,
        out: &mut dyn Write,
        tokens: &[TokenView],
        now: SystemTime,
    ) -> io::Result<()> {
        match self.format {
            Format::Json => {
                for token in tokens {
                    let separator = if self.printed == 0 { "[\n" } else { ",\n" };
                    out.write_all(separator.as_bytes())?;
                    let item = output::json_list_item(token)?;
                    for (i, line) in item.lines().enumerate() {
                        if i > 0 {
                            out.write_all(b"\n")?;
                        }
                        write!(out, "  {line}")?;
                    }
                    self.printed += 1;
                }
            }
            Format::Table if tokens.is_empty() => {}
            Format::Table => {
                let (columns, rows) = match self.kind {
                    ListKind::Database => {
                        (table::DATABASE_COLUMNS, table::database_rows(tokens, now))
                    }
                    ListKind::Management | ListKind::Proxy => (
                        table::MANAGEMENT_COLUMNS,
                        table::management_rows(tokens, now),
                    ),
                };
                let layout = match &self.layout {
                    Some(layout) => layout,
                    None => {
                        let layout = TableLayout::fit(columns, &rows, self.width);
                        layout.header(out)?;
                        self.layout.insert(layout)
                    }
                };
                layout.rows(out, &rows)?;
                self.printed += tokens.len();
            }
        }
        Ok(())
    }

    /// Ends the listing: closes the JSON array, or says the list is empty.
    pub fn finish(&mut self, out: &mut dyn Write) -> io::Result<()> {
        match self.format {
            Format::Json if self.printed == 0 => writeln!(out, "[]"),
            Format::Json => writeln!(out, "\n]"),
            Format::Table if self.printed == 0 => {
                let noun = match self.kind {
                    ListKind::Database => "database",
                    ListKind::Management => "management",
                    ListKind::Proxy => "proxy",
                };
                writeln!(out, "No {noun} tokens.")
            }
            Format::Table => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cli::output::Permission;

    fn view(i: usize, description: &str) -> TokenView {
        TokenView {
            id: format!("00000000-0000-4000-8000-{i:012}"),
            kind: "database",
            description: description.into(),
            permissions: vec![Permission {
                database: format!("db{i}"),
                read: true,
                write: i.is_multiple_of(2),
            }],
            created_at: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_798_761_600)),
            updated_at: None,
            expires_at: None,
            revoked_at: None,
        }
    }

    fn print(format: Format, pages: &[Vec<TokenView>]) -> String {
        let mut out = Vec::new();
        let mut printer = Printer::new(ListKind::Database, format, 80);
        let now = SystemTime::now();
        for page in pages {
            printer.page(&mut out, page, now).expect("page");
        }
        printer.finish(&mut out).expect("finish");
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn json_in_pages_is_the_same_text_as_all_at_once() {
        let all: Vec<TokenView> = (0..5).map(|i| view(i, "a \"quoted\"\nline")).collect();
        let mut whole = Vec::new();
        output::json_tokens(&mut whole, &all).expect("json");
        let whole = String::from_utf8(whole).expect("utf8");
        let paged = print(
            Format::Json,
            &[all[..2].to_vec(), Vec::new(), all[2..].to_vec()],
        );
        assert_eq!(paged, whole);
        let parsed: serde_json::Value = serde_json::from_str(&paged).expect("valid JSON");
        assert_eq!(parsed.as_array().map(Vec::len), Some(5));
        assert_eq!(print(Format::Json, &[Vec::new()]), "[]\n");
    }

    #[test]
    fn a_table_in_pages_keeps_the_first_pages_layout() {
        let first: Vec<TokenView> = (0..2).map(|i| view(i, "short")).collect();
        let second = vec![view(2, &"long ".repeat(40))];
        let paged = print(Format::Table, &[first.clone(), second]);
        let lines: Vec<&str> = paged.lines().collect();
        assert_eq!(lines.len(), 4, "one header, three rows: {paged}");
        assert!(lines[0].starts_with("ID"));
        assert!(lines.iter().all(|l| l.chars().count() <= 80), "{paged}");
        assert!(lines[3].ends_with('…'), "cut to the layout: {paged}");
        // One page: exactly what the whole-list table prints.
        let mut whole = Vec::new();
        table::database_table(&mut whole, &first, SystemTime::now(), 80).expect("table");
        assert_eq!(
            print(Format::Table, &[first]),
            String::from_utf8(whole).expect("utf8")
        );
        assert_eq!(print(Format::Table, &[]), "No database tokens.\n");
    }
}
