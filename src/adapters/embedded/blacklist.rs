//! The [`HostBlacklist`] port on the embedded database: the `blacklist` table.

use super::Embedded;
use async_trait::async_trait;
use fastlane_actors::ports::{HostBlacklist, QueueError};
use rusqlite::params;

#[async_trait]
impl HostBlacklist for Embedded {
    async fn add(&self, host: &str) -> Result<(), QueueError> {
        let host = host.to_string();
        self.with(move |connection| {
            connection.execute(
                "INSERT OR IGNORE INTO blacklist (host) VALUES (?1)",
                params![host],
            )?;
            Ok(())
        })
        .await
        .map_err(QueueError::from)
    }

    async fn remove(&self, host: &str) -> Result<(), QueueError> {
        let host = host.to_string();
        self.with(move |connection| {
            connection.execute("DELETE FROM blacklist WHERE host = ?1", params![host])?;
            Ok(())
        })
        .await
        .map_err(QueueError::from)
    }

    async fn list(&self) -> Result<Vec<String>, QueueError> {
        self.with(|connection| {
            let mut statement =
                connection.prepare_cached("SELECT host FROM blacklist ORDER BY host")?;
            let hosts = statement
                .query_map([], |row| row.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(hosts)
        })
        .await
        .map_err(QueueError::from)
    }
}
