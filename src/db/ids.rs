//! How the id newtypes of `model` are stored: as the row's integer key.
//! Here, not in `model`, so that `rusqlite` stays inside `db`.

use crate::model::{
    ArtifactId, BuildId, BuilderId, BuildsetId, ChangeId, LogId, RequestId, StepId, UserId,
    WorkerId,
};
use rusqlite::types::{FromSql, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

macro_rules! sql_ids {
    ($($name:ident),*) => {$(
        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.0))
            }
        }

        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                i64::column_result(value).map($name)
            }
        }
    )*};
}

sql_ids!(
    BuildId, RequestId, BuildsetId, ChangeId, StepId, LogId, BuilderId, WorkerId, UserId,
    ArtifactId
);
