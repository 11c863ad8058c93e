//! The two databases the store runs on, behind the few calls its queries need: SQLite (one
//! file) and PostgreSQL (a server, named by a `postgres://` URL). Every query is written once,
//! in SQL both accept, with `?N` parameters (rewritten to `$N` for PostgreSQL).

use crate::error::{MonitorError, Result};
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Where the monitor's database is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file, created when absent.
    Sqlite(PathBuf),
    /// A PostgreSQL database, by its connection URL (`postgres://user:password@host/name`).
    Postgres(String),
}

impl Database {
    /// A `postgres://` or `postgresql://` URL names a PostgreSQL database; anything else is the
    /// path of a SQLite file.
    pub fn parse(text: &str) -> Database {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            Database::Postgres(text.to_string())
        } else {
            Database::Sqlite(PathBuf::from(text))
        }
    }
}

impl std::str::FromStr for Database {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> std::result::Result<Database, Self::Err> {
        Ok(Database::parse(text))
    }
}

impl From<&Database> for Database {
    fn from(db: &Database) -> Database {
        db.clone()
    }
}

impl From<&Path> for Database {
    fn from(path: &Path) -> Database {
        Database::Sqlite(path.to_path_buf())
    }
}

impl From<&PathBuf> for Database {
    fn from(path: &PathBuf) -> Database {
        Database::Sqlite(path.clone())
    }
}

impl From<PathBuf> for Database {
    fn from(path: PathBuf) -> Database {
        Database::Sqlite(path)
    }
}

/// The file, or the URL with its password hidden.
impl fmt::Display for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Database::Sqlite(path) => write!(f, "{}", path.display()),
            Database::Postgres(url) => f.write_str(&without_password(url)),
        }
    }
}

/// `url` with the password of its user part and of a `password=` parameter replaced by `***`.
fn without_password(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _)) => format!("{name}:***@{host}"),
            None => authority.to_string(),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some(("password", _)) => "password=***".to_string(),
                    _ => kv.to_string(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// One query parameter.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg<'a> {
    Int(Option<i64>),
    Real(f64),
    Text(Option<&'a str>),
}

impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}

impl From<Option<i64>> for Arg<'_> {
    fn from(v: Option<i64>) -> Self {
        Arg::Int(v)
    }
}

impl From<bool> for Arg<'_> {
    fn from(v: bool) -> Self {
        Arg::Int(Some(v.into()))
    }
}

impl From<f64> for Arg<'_> {
    fn from(v: f64) -> Self {
        Arg::Real(v)
    }
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Arg::Text(Some(v))
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(v: &'a String) -> Self {
        Arg::Text(Some(v))
    }
}

impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Arg::Text(v)
    }
}

/// The parameters of a query: `args![a, b]`.
macro_rules! args {
    ($($x:expr),* $(,)?) => {
        &[$($crate::store::db::Arg::from($x)),*] as &[$crate::store::db::Arg<'_>]
    };
}
pub(crate) use args;

/// A statement over many rows. SQLite runs `sqlite` (parameters `?1..?k`) once per row, from
/// one prepared statement; PostgreSQL runs `postgres` once, its parameters `$1..$k` being the
/// columns as arrays (`UNNEST($1::bigint[], ...)`, `= ANY($1)`): one round trip for the lot.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bulk {
    pub(crate) sqlite: &'static str,
    pub(crate) postgres: &'static str,
}

/// One column of the rows of a [`Bulk`] statement.
#[derive(Debug, Clone)]
pub(crate) enum Column<'a> {
    Int(Vec<i64>),
    Real(Vec<f64>),
    Text(Vec<&'a str>),
}

impl Column<'_> {
    fn len(&self) -> usize {
        match self {
            Column::Int(v) => v.len(),
            Column::Real(v) => v.len(),
            Column::Text(v) => v.len(),
        }
    }

    fn arg(&self, row: usize) -> Arg<'_> {
        match self {
            Column::Int(v) => Arg::from(v[row]),
            Column::Real(v) => Arg::from(v[row]),
            Column::Text(v) => Arg::from(v[row]),
        }
    }

    fn pg(&self) -> &(dyn postgres::types::ToSql + Sync) {
        match self {
            Column::Int(v) => v,
            Column::Real(v) => v,
            Column::Text(v) => v,
        }
    }
}

/// One value of a result row.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

/// One result row; its getters name the database and column when a value has another type.
#[derive(Debug)]
pub(crate) struct Row {
    cells: Vec<Cell>,
    db: Arc<str>,
}

impl Row {
    fn wrong(&self, column: usize, wanted: &str) -> MonitorError {
        MonitorError::Store {
            db: self.db.to_string(),
            message: format!(
                "column {column} holds {:?} where {wanted} was expected",
                self.cells[column]
            ),
        }
    }

    /// An integer column.
    pub(crate) fn int(&self, column: usize) -> Result<i64> {
        self.maybe_int(column)?
            .ok_or_else(|| self.wrong(column, "an integer"))
    }

    /// An integer column that may be NULL.
    pub(crate) fn maybe_int(&self, column: usize) -> Result<Option<i64>> {
        match &self.cells[column] {
            Cell::Int(v) => Ok(Some(*v)),
            Cell::Null => Ok(None),
            _ => Err(self.wrong(column, "an integer")),
        }
    }

    /// A count (an integer column that is never negative).
    pub(crate) fn count(&self, column: usize) -> Result<u64> {
        u64::try_from(self.int(column)?).map_err(|_| self.wrong(column, "a count"))
    }

    /// A number column.
    pub(crate) fn real(&self, column: usize) -> Result<f64> {
        match &self.cells[column] {
            Cell::Real(v) => Ok(*v),
            Cell::Int(v) => Ok(*v as f64),
            _ => Err(self.wrong(column, "a number")),
        }
    }

    /// A text column.
    pub(crate) fn text(&self, column: usize) -> Result<String> {
        self.maybe_text(column)?
            .ok_or_else(|| self.wrong(column, "a text"))
    }

    /// A text column that may be NULL.
    pub(crate) fn maybe_text(&self, column: usize) -> Result<Option<String>> {
        match &self.cells[column] {
            Cell::Text(v) => Ok(Some(v.clone())),
            Cell::Null => Ok(None),
            _ => Err(self.wrong(column, "a text")),
        }
    }
}

/// An open connection.
pub(crate) enum Conn {
    Sqlite(rusqlite::Connection),
    Postgres(Box<Pg>),
}

/// A PostgreSQL connection and the statements prepared on it, by their SQL.
pub(crate) struct Pg {
    url: String,
    client: postgres::Client,
    prepared: HashMap<&'static str, postgres::Statement>,
}

/// One transaction (or read-only snapshot) on a connection.
pub(crate) enum Session<'c> {
    Sqlite(rusqlite::Transaction<'c>),
    Postgres {
        tx: RefCell<postgres::Transaction<'c>>,
        prepared: RefCell<&'c mut HashMap<&'static str, postgres::Statement>>,
    },
}

impl Conn {
    /// Connects to `db`, creating or upgrading its tables to `schema` (written for SQLite;
    /// see [`postgres_schema`]) at `version`.
    pub(crate) fn open(db: &Database, schema: &str, version: i64) -> Result<Conn> {
        let failed = store_error(db);
        match db {
            Database::Sqlite(path) => open_sqlite(path, schema, version)
                .map(Conn::Sqlite)
                .map_err(failed),
            Database::Postgres(url) => {
                let mut pg = Pg::connect(url).map_err(failed)?;
                pg.create(schema, version).map_err(failed)?;
                Ok(Conn::Postgres(Box::new(pg)))
            }
        }
    }

    /// A transaction: read-write, or a read-only snapshot.
    pub(crate) fn begin(&mut self, read_only: bool) -> std::result::Result<Session<'_>, String> {
        match self {
            Conn::Sqlite(conn) => conn
                .transaction()
                .map(Session::Sqlite)
                .map_err(|e| e.to_string()),
            Conn::Postgres(pg) => pg.begin(read_only),
        }
    }
}

fn store_error(db: &Database) -> impl Fn(String) -> MonitorError + Copy + '_ {
    move |message| MonitorError::Store {
        db: db.to_string(),
        message,
    }
}

fn open_sqlite(
    path: &Path,
    schema: &str,
    version: i64,
) -> std::result::Result<rusqlite::Connection, String> {
    let text = |e: rusqlite::Error| e.to_string();
    let conn = rusqlite::Connection::open(path).map_err(text)?;
    conn.busy_timeout(Duration::from_secs(30)).map_err(text)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(text)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(text)?;
    let stored: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(text)?;
    check_version(stored, version)?;
    let schema = schema.replace("{seq}", "INTEGER PRIMARY KEY AUTOINCREMENT");
    conn.execute_batch(&format!("{schema} PRAGMA user_version = {version};"))
        .map_err(text)?;
    Ok(conn)
}

fn check_version(stored: i64, version: i64) -> std::result::Result<(), String> {
    if stored > version {
        return Err(format!(
            "schema version {stored}; this lmfuse reads version {version}"
        ));
    }
    Ok(())
}

/// An arbitrary key of the advisory lock that makes two monitors creating the tables at once
/// wait for each other.
const SCHEMA_LOCK: i64 = 0x6c6d_6675_7365;

impl Pg {
    fn connect(url: &str) -> std::result::Result<Pg, String> {
        let client = postgres::Client::connect(url, postgres::NoTls).map_err(describe)?;
        Ok(Pg {
            url: url.to_string(),
            client,
            prepared: HashMap::new(),
        })
    }

    fn create(&mut self, schema: &str, version: i64) -> std::result::Result<(), String> {
        let mut tx = self.client.transaction().map_err(describe)?;
        tx.query_one("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
            .map_err(describe)?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS lmfuse_schema(version BIGINT NOT NULL)")
            .map_err(describe)?;
        let stored: Option<i64> = tx
            .query_one("SELECT MAX(version) FROM lmfuse_schema", &[])
            .and_then(|r| r.try_get(0))
            .map_err(describe)?;
        check_version(stored.unwrap_or(0), version)?;
        tx.batch_execute(&postgres_schema(schema))
            .map_err(describe)?;
        tx.execute("DELETE FROM lmfuse_schema", &[])
            .map_err(describe)?;
        tx.execute("INSERT INTO lmfuse_schema(version) VALUES($1)", &[&version])
            .map_err(describe)?;
        tx.commit().map_err(describe)
    }

    fn begin(&mut self, read_only: bool) -> std::result::Result<Session<'_>, String> {
        if self.client.is_closed() {
            // The server went away (restarted, or the connection was cut): connect again.
            *self = Pg::connect(&self.url)?;
        }
        let mut build = self.client.build_transaction();
        if read_only {
            build = build
                .read_only(true)
                .isolation_level(postgres::IsolationLevel::RepeatableRead);
        }
        let tx = build.start().map_err(describe)?;
        Ok(Session::Postgres {
            tx: RefCell::new(tx),
            prepared: RefCell::new(&mut self.prepared),
        })
    }
}

/// The SQLite schema in PostgreSQL's words: an identity column for `{seq}`.
fn postgres_schema(schema: &str) -> String {
    schema.replace(
        "{seq}",
        "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
    )
}

/// A PostgreSQL error with its detail (the plain message of a server error is only "db error").
fn describe(e: postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    }
}

/// `sql` with its `?N` parameters written `$N`.
fn dollar_parameters(sql: &str) -> String {
    sql.replace('?', "$")
}

impl Session<'_> {
    /// Runs a statement; the number of rows it changed.
    pub(crate) fn exec(
        &self,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> std::result::Result<usize, String> {
        match self {
            Session::Sqlite(tx) => {
                let mut stmt = tx.prepare_cached(sql).map_err(|e| e.to_string())?;
                stmt.execute(rusqlite::params_from_iter(args.iter().map(sqlite_arg)))
                    .map_err(|e| e.to_string())
            }
            Session::Postgres { tx, prepared } => {
                let mut tx = tx.borrow_mut();
                let stmt = pg_statement(&mut tx, &mut prepared.borrow_mut(), sql)?;
                let n = tx.execute(&stmt, &pg_args(args)).map_err(describe)?;
                Ok(n as usize)
            }
        }
    }

    /// Runs a query; its rows.
    pub(crate) fn query(
        &self,
        sql: &'static str,
        args: &[Arg<'_>],
        db: &Arc<str>,
    ) -> std::result::Result<Vec<Row>, String> {
        match self {
            Session::Sqlite(tx) => sqlite_rows(tx, sql, args)
                .map(|cells| rows_of(cells, db))
                .map_err(|e| e.to_string()),
            Session::Postgres { tx, prepared } => {
                let mut tx = tx.borrow_mut();
                let stmt = pg_statement(&mut tx, &mut prepared.borrow_mut(), sql)?;
                pg_rows(tx.query(&stmt, &pg_args(args)), db)
            }
        }
    }

    /// Runs `bulk` over the rows of `columns` (all of one length); the number of rows changed.
    pub(crate) fn exec_bulk(
        &self,
        bulk: Bulk,
        columns: &[Column<'_>],
    ) -> std::result::Result<usize, String> {
        match self {
            Session::Sqlite(_) => {
                let mut changed = 0;
                for row in 0..columns.first().map_or(0, Column::len) {
                    let args: Vec<Arg<'_>> = columns.iter().map(|c| c.arg(row)).collect();
                    changed += self.exec(bulk.sqlite, &args)?;
                }
                Ok(changed)
            }
            Session::Postgres { tx, prepared } => {
                let mut tx = tx.borrow_mut();
                let stmt = pg_statement(&mut tx, &mut prepared.borrow_mut(), bulk.postgres)?;
                let args: Vec<_> = columns.iter().map(Column::pg).collect();
                let n = tx.execute(&stmt, &args).map_err(describe)?;
                Ok(n as usize)
            }
        }
    }

    /// Runs the query `bulk` over the rows of `columns`; the rows of all.
    pub(crate) fn query_bulk(
        &self,
        bulk: Bulk,
        columns: &[Column<'_>],
        db: &Arc<str>,
    ) -> std::result::Result<Vec<Row>, String> {
        match self {
            Session::Sqlite(_) => {
                let mut rows = Vec::new();
                for row in 0..columns.first().map_or(0, Column::len) {
                    let args: Vec<Arg<'_>> = columns.iter().map(|c| c.arg(row)).collect();
                    rows.extend(self.query(bulk.sqlite, &args, db)?);
                }
                Ok(rows)
            }
            Session::Postgres { tx, prepared } => {
                let mut tx = tx.borrow_mut();
                let stmt = pg_statement(&mut tx, &mut prepared.borrow_mut(), bulk.postgres)?;
                let args: Vec<_> = columns.iter().map(Column::pg).collect();
                pg_rows(tx.query(&stmt, &args), db)
            }
        }
    }

    /// Commits the transaction.
    pub(crate) fn commit(self) -> std::result::Result<(), String> {
        match self {
            Session::Sqlite(tx) => tx.commit().map_err(|e| e.to_string()),
            Session::Postgres { tx, .. } => tx.into_inner().commit().map_err(describe),
        }
    }
}

fn rows_of(cells: Vec<Vec<Cell>>, db: &Arc<str>) -> Vec<Row> {
    cells
        .into_iter()
        .map(|cells| Row {
            cells,
            db: db.clone(),
        })
        .collect()
}

fn pg_rows(
    rows: std::result::Result<Vec<postgres::Row>, postgres::Error>,
    db: &Arc<str>,
) -> std::result::Result<Vec<Row>, String> {
    let rows = rows.map_err(describe)?;
    let cells = rows
        .iter()
        .map(pg_cells)
        .collect::<std::result::Result<_, _>>()?;
    Ok(rows_of(cells, db))
}

fn sqlite_arg(arg: &Arg<'_>) -> rusqlite::types::Value {
    use rusqlite::types::Value;
    match *arg {
        Arg::Int(v) => v.map_or(Value::Null, Value::Integer),
        Arg::Real(v) => Value::Real(v),
        Arg::Text(v) => v.map_or(Value::Null, |t| Value::Text(t.to_string())),
    }
}

fn sqlite_rows(
    tx: &rusqlite::Transaction<'_>,
    sql: &str,
    args: &[Arg<'_>],
) -> rusqlite::Result<Vec<Vec<Cell>>> {
    use rusqlite::types::ValueRef;
    let mut stmt = tx.prepare_cached(sql)?;
    let columns = stmt.column_count();
    let mut rows = stmt.query(rusqlite::params_from_iter(args.iter().map(sqlite_arg)))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let cells = (0..columns)
            .map(|i| {
                Ok(match row.get_ref(i)? {
                    ValueRef::Null => Cell::Null,
                    ValueRef::Integer(v) => Cell::Int(v),
                    ValueRef::Real(v) => Cell::Real(v),
                    ValueRef::Text(t) | ValueRef::Blob(t) => {
                        Cell::Text(String::from_utf8_lossy(t).into_owned())
                    }
                })
            })
            .collect::<rusqlite::Result<_>>()?;
        out.push(cells);
    }
    Ok(out)
}

fn pg_statement(
    tx: &mut postgres::Transaction<'_>,
    prepared: &mut HashMap<&'static str, postgres::Statement>,
    sql: &'static str,
) -> std::result::Result<postgres::Statement, String> {
    if let Some(stmt) = prepared.get(sql) {
        return Ok(stmt.clone());
    }
    let stmt = tx.prepare(&dollar_parameters(sql)).map_err(describe)?;
    prepared.insert(sql, stmt.clone());
    Ok(stmt)
}

fn pg_args<'a>(args: &'a [Arg<'a>]) -> Vec<&'a (dyn postgres::types::ToSql + Sync)> {
    args.iter()
        .map(|a| match a {
            Arg::Int(v) => v as &(dyn postgres::types::ToSql + Sync),
            Arg::Real(v) => v,
            Arg::Text(v) => v,
        })
        .collect()
}

fn pg_cells(row: &postgres::Row) -> std::result::Result<Vec<Cell>, String> {
    use postgres::types::Type;
    let cell = |i: usize| -> std::result::Result<Cell, postgres::Error> {
        let ty = row.columns()[i].type_();
        Ok(if *ty == Type::INT8 {
            row.try_get::<_, Option<i64>>(i)?
                .map_or(Cell::Null, Cell::Int)
        } else if *ty == Type::INT4 {
            row.try_get::<_, Option<i32>>(i)?
                .map_or(Cell::Null, |v| Cell::Int(v.into()))
        } else if *ty == Type::FLOAT8 {
            row.try_get::<_, Option<f64>>(i)?
                .map_or(Cell::Null, Cell::Real)
        } else if *ty == Type::BOOL {
            row.try_get::<_, Option<bool>>(i)?
                .map_or(Cell::Null, |v| Cell::Int(v.into()))
        } else {
            row.try_get::<_, Option<String>>(i)?
                .map_or(Cell::Null, Cell::Text)
        })
    };
    (0..row.len()).map(|i| cell(i).map_err(describe)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_names_postgres_and_anything_else_a_file() {
        assert_eq!(
            Database::parse("postgresql://u@h/db"),
            Database::Postgres("postgresql://u@h/db".into())
        );
        assert_eq!(
            Database::parse("monitor.db"),
            Database::Sqlite("monitor.db".into())
        );
    }

    #[test]
    fn errors_never_show_the_password() {
        let db = Database::parse("postgres://ann:s3cret@db.example:5433/mon?password=s3cret&x=1");
        let shown = db.to_string();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert_eq!(
            shown,
            "postgres://ann:***@db.example:5433/mon?password=***&x=1"
        );
        assert_eq!(
            Database::parse("postgres://ann@h/db").to_string(),
            "postgres://ann@h/db"
        );
    }

    #[test]
    fn a_server_that_is_not_there_is_named_without_the_password() {
        let db = Database::parse("postgres://ann:s3cret@127.0.0.1:1/mon");
        let e = crate::store::Store::open(db).err().unwrap().to_string();
        assert!(
            e.contains("postgres://ann:***@127.0.0.1:1/mon") && !e.contains("s3cret"),
            "{e}"
        );
    }

    #[test]
    fn parameters_are_numbered_for_postgres() {
        assert_eq!(
            dollar_parameters("SELECT a FROM t WHERE b = ?1 AND c = ?12"),
            "SELECT a FROM t WHERE b = $1 AND c = $12"
        );
    }
}
