//! A generation's chunk store: chunk text, metadata and full-precision vectors in SQLite, so that later
//! runs can reuse the vectors of unchanged files instead of embedding them again.

use std::path::Path;

use rusqlite::{params, Connection};

use super::chunk::Chunk;

pub struct StoredChunk {
    pub chunk: Chunk,
    pub file_hash: String,
    pub vector: Vec<f32>,
}

pub fn write(path: &Path, chunks: &[StoredChunk]) -> rusqlite::Result<()> {
    let mut conn = Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode=DELETE;
         CREATE TABLE chunks (
             id INTEGER PRIMARY KEY,
             source TEXT NOT NULL,
             title TEXT NOT NULL,
             heading TEXT NOT NULL,
             position INTEGER NOT NULL,
             text TEXT NOT NULL,
             file_hash TEXT NOT NULL,
             vector BLOB NOT NULL
         );",
    )?;
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare(
            "INSERT INTO chunks (id, source, title, heading, position, text, file_hash, vector)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for (id, c) in chunks.iter().enumerate() {
            let blob: Vec<u8> = c.vector.iter().flat_map(|x| x.to_le_bytes()).collect();
            insert.execute(params![
                id as i64,
                c.chunk.source,
                c.chunk.title,
                c.chunk.heading,
                c.chunk.position as i64,
                c.chunk.text,
                c.file_hash,
                blob
            ])?;
        }
    }
    tx.commit()
}

/// All chunks in id order (ids are 0..n, the usearch keys).
pub fn read(path: &Path) -> rusqlite::Result<Vec<StoredChunk>> {
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut stmt = conn.prepare(
        "SELECT source, title, heading, position, text, file_hash, vector FROM chunks ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        let blob: Vec<u8> = r.get(6)?;
        Ok(StoredChunk {
            chunk: Chunk {
                source: r.get(0)?,
                title: r.get(1)?,
                heading: r.get(2)?,
                position: r.get::<_, i64>(3)? as usize,
                text: r.get(4)?,
            },
            file_hash: r.get(5)?,
            vector: blob
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        })
    })?;
    rows.collect()
}
