//! Per-caller data (`data:`): reading the rows of a CSV or JSON-lines file, or the clips of an
//! audio dataset folder, and which row each call gets.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use rand::RngExt;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::plan::model::{DataSpec, Order, Pick};

/// Largest data file read (rows are held in memory, rendered per distinct value).
pub const MAX_DATA_BYTES: u64 = 16 << 20;

/// Most rows a data file (or clips an audio folder) may hold.
pub const MAX_ROWS: usize = 100_000;

/// One row: column → value.
pub type Row = BTreeMap<String, String>;

/// The rows of a plan's `data:`, read once.
#[derive(Debug, Clone, PartialEq)]
pub struct DataSet {
    /// Column names, in file order.
    pub columns: Vec<String>,
    pub rows: Vec<Row>,
    pub kind: DataKind,
}

/// How calls get rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataKind {
    /// A row per user, for all its calls.
    File(Pick),
    /// A clip per call, in this order per user.
    Audio(Order),
}

/// What went wrong reading the data; `key` names the `data:` key at fault.
#[derive(Debug, Clone, PartialEq)]
pub struct DataError {
    pub key: &'static str,
    pub message: String,
    pub hint: Option<String>,
}

fn bad(key: &'static str, message: String, hint: Option<String>) -> DataError {
    DataError { key, message, hint }
}

/// Read a regular file of at most `limit` bytes.
pub(crate) fn read_limited(path: &Path, limit: u64) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > limit {
        return Err(format!(
            "{} bytes; the limit is {} KiB",
            meta.len(),
            limit / 1024
        ));
    }
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(limit + 1).read_to_string(&mut text))
        .map_err(|e| e.to_string())?;
    Ok(text)
}

/// Read `data:`; `resolve` turns a path written in the plan into a file path.
pub fn read(
    spec: &DataSpec,
    resolve: &dyn Fn(&str) -> std::path::PathBuf,
) -> Result<DataSet, DataError> {
    match (&spec.file, &spec.audio_dir) {
        (Some(_), Some(_)) | (None, None) => Err(bad(
            "file",
            "`data:` needs exactly one of `file` (CSV or JSON lines) and `audio_dir` (a folder of WAVs)".into(),
            None,
        )),
        (Some(file), None) => {
            if spec.order.is_some() {
                return Err(bad("order", "`order` goes with `audio_dir`; a data file takes `pick`".into(), None));
            }
            let path = resolve(file);
            let text = read_limited(&path, MAX_DATA_BYTES).map_err(|e| {
                bad("file", format!("cannot read data file `{file}`: {e}"), None)
            })?;
            let lower = file.to_ascii_lowercase();
            let (columns, rows) = if lower.ends_with(".csv") {
                read_csv(file, &text)?
            } else if lower.ends_with(".jsonl") || lower.ends_with(".ndjson") {
                read_jsonl(file, &text)?
            } else {
                return Err(bad(
                    "file",
                    format!("data file `{file}` must end in .csv, .jsonl or .ndjson"),
                    None,
                ));
            };
            if rows.is_empty() {
                return Err(bad("file", format!("data file `{file}` has no rows"), None));
            }
            Ok(DataSet {
                columns,
                rows,
                kind: DataKind::File(spec.pick.unwrap_or_default()),
            })
        }
        (None, Some(dir)) => {
            if spec.pick.is_some() {
                return Err(bad("pick", "`pick` goes with `file`; an audio folder takes `order`".into(), None));
            }
            read_audio_dir(dir, &resolve(dir), spec.order.unwrap_or_default())
        }
    }
}

fn too_many(file: &str) -> DataError {
    bad(
        "file",
        format!("data file `{file}` has more than {MAX_ROWS} rows"),
        None,
    )
}

fn read_csv(file: &str, text: &str) -> Result<(Vec<String>, Vec<Row>), DataError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let header = reader
        .headers()
        .map_err(|e| bad("file", format!("data file `{file}`: {e}"), None))?
        .clone();
    let columns: Vec<String> = header.iter().map(str::to_string).collect();
    if let Some(dup) = columns
        .iter()
        .enumerate()
        .find(|(i, c)| columns[..*i].contains(c))
    {
        return Err(bad(
            "file",
            format!(
                "data file `{file}`: column `{}` appears twice in the header",
                dup.1
            ),
            None,
        ));
    }
    if columns.iter().any(String::is_empty) {
        return Err(bad(
            "file",
            format!("data file `{file}`: the header has an empty column name"),
            None,
        ));
    }
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(i + 2, |p| p.line() as usize);
            bad(
                "file",
                format!("data file `{file}` line {line}: {}", csv_reason(&e)),
                Some(format!(
                    "every row needs the {} columns of the header",
                    columns.len()
                )),
            )
        })?;
        if rows.len() == MAX_ROWS {
            return Err(too_many(file));
        }
        rows.push(
            columns
                .iter()
                .cloned()
                .zip(record.iter().map(str::to_string))
                .collect(),
        );
    }
    Ok((columns, rows))
}

fn csv_reason(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => {
            format!("{len} fields where the header has {expected_len}")
        }
        _ => e.to_string(),
    }
}

fn read_jsonl(file: &str, text: &str) -> Result<(Vec<String>, Vec<Row>), DataError> {
    let mut columns: Vec<String> = Vec::new();
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("data file `{file}` line {}", i + 1);
        let value: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| bad("file", format!("{}: not JSON: {e}", at()), None))?;
        let serde_json::Value::Object(map) = value else {
            return Err(bad(
                "file",
                format!("{}: each line must be a JSON object", at()),
                None,
            ));
        };
        if rows.len() == MAX_ROWS {
            return Err(too_many(file));
        }
        let mut row = Row::new();
        for (k, v) in map {
            if !columns.contains(&k) {
                if !rows.is_empty() {
                    return Err(bad(
                        "file",
                        format!("{}: field `{k}` is not in the first line", at()),
                        Some("every line needs the same fields".into()),
                    ));
                }
                columns.push(k.clone());
            }
            let text = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            row.insert(k, text);
        }
        if row.len() != columns.len() {
            let missing: Vec<&str> = columns
                .iter()
                .filter(|c| !row.contains_key(*c))
                .map(String::as_str)
                .collect();
            return Err(bad(
                "file",
                format!("{}: missing field(s) {}", at(), missing.join(", ")),
                None,
            ));
        }
        rows.push(row);
    }
    Ok((columns, rows))
}

fn read_audio_dir(written: &str, dir: &Path, order: Order) -> Result<DataSet, DataError> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        bad(
            "audio_dir",
            format!("cannot read audio folder `{written}`: {e}"),
            None,
        )
    })?;
    let mut wavs: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.to_ascii_lowercase().ends_with(".wav"))
        .collect();
    wavs.sort();
    if wavs.is_empty() {
        return Err(bad(
            "audio_dir",
            format!("audio folder `{written}` holds no .wav file"),
            None,
        ));
    }
    if wavs.len() > MAX_ROWS {
        return Err(bad(
            "audio_dir",
            format!("audio folder `{written}` holds more than {MAX_ROWS} WAVs"),
            None,
        ));
    }
    let base = written.trim_end_matches('/');
    let rows = wavs
        .iter()
        .map(|n| {
            let stem = n[..n.len() - 4].to_string();
            let transcript = std::fs::read_to_string(dir.join(format!("{stem}.txt")))
                .map(|t| t.trim().to_string())
                .unwrap_or_default();
            Row::from([
                ("audio".to_string(), format!("{base}/{n}")),
                ("name".to_string(), stem),
                ("transcript".to_string(), transcript),
            ])
        })
        .collect();
    Ok(DataSet {
        columns: vec!["audio".into(), "name".into(), "transcript".into()],
        rows,
        kind: DataKind::Audio(order),
    })
}

/// Which row a call gets: by user for a data file, by user and iteration for an audio folder.
/// `seed` is the plan's seed.
pub fn row_of(kind: DataKind, rows: usize, seed: u64, user: u32, iteration: u64) -> usize {
    let n = rows.max(1);
    let rng = || {
        StdRng::seed_from_u64(
            seed ^ 0xDA7A_5EED ^ (u64::from(user) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        )
    };
    match kind {
        DataKind::File(Pick::Sequential | Pick::Unique) => user as usize % n,
        DataKind::File(Pick::Random) => rng().random_range(0..n),
        DataKind::Audio(Order::Sequential) => ((user as u64 + iteration) % n as u64) as usize,
        DataKind::Audio(Order::Shuffle) => {
            // One permutation per user (a pass through every clip before any repeats).
            let mut order: Vec<usize> = (0..n).collect();
            order.shuffle(&mut rng());
            order[(iteration % n as u64) as usize]
        }
    }
}

/// Whether the plan names a row field anywhere (then each distinct row renders it anew).
pub(super) fn uses_rows(lp: &crate::plan::LoadedPlan) -> bool {
    lp.data.is_some() && lp.value.is_some() && !used_columns(lp).is_empty()
}

fn used_columns(lp: &crate::plan::LoadedPlan) -> Vec<String> {
    use crate::plan::template::{Ns, Scope, Template};
    let (Some(ds), Some(value)) = (lp.data.as_ref(), lp.value.as_ref()) else {
        return Vec::new();
    };
    let mut used: Vec<String> = Vec::new();
    let scope = Scope {
        row: Some(&ds.columns),
        passthrough: true,
        ..Scope::default()
    };
    let mut stack = vec![value.as_ref()];
    while let Some(v) = stack.pop() {
        match v {
            serde_json::Value::Object(m) => stack.extend(m.values()),
            serde_json::Value::Array(a) => stack.extend(a.iter()),
            serde_json::Value::String(s) if Template::has_expressions(s) => {
                if let Ok(t) = Template::parse(s, &scope) {
                    for (ns, name) in t.names() {
                        if ns == Ns::Row && !used.iter().any(|u| u == name) {
                            used.push(name.to_string());
                        }
                    }
                }
            }
            _ => {}
        }
    }
    used
}

/// Render the plan once per distinct data row (rows that fill in the same values share a
/// rendering), handing each rendering (with the first row that made it) to `each` as it is
/// made, so only one is held at a time; `each` returns false to stop. Returns each row's
/// rendering index (None when a row does not render: an error is pushed).
pub(super) fn renderings(
    lp: &crate::plan::LoadedPlan,
    errs: &mut Vec<crate::plan::Diagnostic>,
    each: &mut dyn FnMut(usize, crate::plan::Plan) -> bool,
) -> Option<Vec<u32>> {
    use crate::plan::diag::Seg;
    use crate::plan::template::{Context, Ns};
    let ds = lp.data.as_ref()?;
    let value = lp.value.as_ref()?;
    let used = used_columns(lp);
    let mut keys: std::collections::HashMap<Vec<&str>, u32> = std::collections::HashMap::new();
    let mut made = 0u32;
    let mut row_variant = Vec::with_capacity(ds.rows.len());
    for (r, row) in ds.rows.iter().enumerate() {
        let key: Vec<&str> = used
            .iter()
            .map(|c| row.get(c).map_or("", String::as_str))
            .collect();
        if let Some(&k) = keys.get(&key) {
            row_variant.push(k);
            continue;
        }
        let mut v = value.as_ref().clone();
        let cx = Context {
            row: Some(row),
            ..Context::default()
        };
        let rendered = crate::plan::include::fill(
            &mut v,
            &mut Vec::new(),
            Some(&ds.columns),
            &lp.var_names,
            &cx,
            &[Ns::Row],
        )
        .and_then(|()| serde_json::from_value::<crate::plan::Plan>(v).map_err(|e| e.to_string()));
        match rendered {
            Ok(p) => {
                keys.insert(key, made);
                row_variant.push(made);
                made += 1;
                if !each(r, p) {
                    return None;
                }
            }
            Err(e) => {
                errs.push(lp.diag(
                    &[Seg::Key("data".into())],
                    format!("data row {}: {e}", r + 1),
                    None,
                ));
                return None;
            }
        }
    }
    Some(row_variant)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_jsonl_rows() {
        let (cols, rows) = read_csv("c.csv", "lang, clip\nfr,a\nde , b\n").unwrap();
        assert_eq!(cols, ["lang", "clip"]);
        assert_eq!(rows[1]["lang"], "de");
        let e = read_csv("c.csv", "lang,clip\nfr\n").unwrap_err();
        assert!(
            e.message
                .contains("line 2: 1 fields where the header has 2"),
            "{}",
            e.message
        );
        let (cols, rows) = read_jsonl(
            "c.jsonl",
            "{\"a\":\"x\",\"n\":3}\n\n{\"a\":\"y\",\"n\":4}\n",
        )
        .unwrap();
        assert_eq!(cols, ["a", "n"]);
        assert_eq!(rows[1]["n"], "4");
        assert!(
            read_jsonl("c.jsonl", "{\"a\":1}\n[1]\n")
                .unwrap_err()
                .message
                .contains("line 2")
        );
        assert!(read_jsonl("c.jsonl", "{\"a\":1}\n{\"b\":1}\n").is_err());
    }

    #[test]
    fn rows_per_user_and_iteration() {
        let seq = DataKind::File(Pick::Sequential);
        assert_eq!(
            (0..5).map(|u| row_of(seq, 3, 1, u, 0)).collect::<Vec<_>>(),
            [0, 1, 2, 0, 1]
        );
        let rnd = DataKind::File(Pick::Random);
        assert_eq!(row_of(rnd, 10, 1, 4, 0), row_of(rnd, 10, 1, 4, 9));
        let shuffled = DataKind::Audio(Order::Shuffle);
        let mut seen: Vec<usize> = (0..5).map(|i| row_of(shuffled, 5, 7, 2, i)).collect();
        seen.sort();
        assert_eq!(seen, [0, 1, 2, 3, 4]);
        let inorder = DataKind::Audio(Order::Sequential);
        assert_eq!(
            (0..3)
                .map(|i| row_of(inorder, 3, 7, 1, i))
                .collect::<Vec<_>>(),
            [1, 2, 0]
        );
    }
}
