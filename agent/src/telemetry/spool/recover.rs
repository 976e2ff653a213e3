//! Opening the spool: every segment read back and checked, torn tails cut
//! off, corrupt entries skipped, and what was unacked or unpacked found.

use super::*;

impl Spool {
    /// Opens (or creates) the spool in `cfg.dir` and reads it back: batches
    /// sent but not acked, and how many records wait to be packed.
    pub fn open(cfg: SpoolConfig) -> io::Result<(Spool, Recovery)> {
        fs::create_dir_all(&cfg.dir).map_err(|e| with_path(&cfg.dir, e))?;
        let mut names: Vec<(u64, PathBuf)> = Vec::new();
        for entry in fs::read_dir(&cfg.dir).map_err(|e| with_path(&cfg.dir, e))? {
            let path = entry?.path();
            let id = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(id) = id {
                names.push((id, path));
            }
        }
        names.sort();

        let mut recovery = Recovery::default();
        let mut counters = SpoolCounters::default();
        let mut segments = Vec::new();
        let mut batches: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        let mut done: HashSet<u64> = HashSet::new();
        let mut max_id = 0u64;
        let last = names.len().saturating_sub(1);
        for (i, (first_id, path)) in names.into_iter().enumerate() {
            let mut bytes = fs::read(&path).map_err(|e| with_path(&path, e))?;
            if !bytes.starts_with(MAGIC) {
                recovery.notes.push(format!(
                    "{} is not a spool segment (bad header); moved aside as .bad",
                    path.display()
                ));
                counters.corrupt_entries += 1;
                fs::rename(&path, path.with_extension("bad")).map_err(|e| with_path(&path, e))?;
                continue;
            }
            let end = scan(&bytes, |_, entry| match entry {
                Entry::Record { id, .. } => max_id = max_id.max(id),
                Entry::Batch { seq, first, last } => {
                    batches.insert(seq, (first, last));
                }
                Entry::Ack { seq } | Entry::Abandon { seq } => {
                    done.insert(seq);
                }
            });
            counters.corrupt_entries += end.corrupt;
            if end.corrupt > 0 {
                recovery.notes.push(format!(
                    "{}: skipped {} corrupt entries",
                    path.display(),
                    end.corrupt
                ));
            }
            if end.torn {
                counters.torn_tails += 1;
                recovery.notes.push(format!(
                    "{}: cut off a torn tail of {} bytes (a write interrupted by a crash)",
                    path.display(),
                    bytes.len() as u64 - end.valid
                ));
                if i == last {
                    let f = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(|e| with_path(&path, e))?;
                    f.set_len(end.valid).map_err(|e| with_path(&path, e))?;
                    f.sync_all().map_err(|e| with_path(&path, e))?;
                }
                bytes.truncate(end.valid as usize);
            }
            segments.push(Segment {
                first_id,
                path,
                bytes: bytes.len() as u64,
            });
        }

        // Records up to the highest batched id are packed; the rest wait.
        let packed_upto = batches.values().map(|&(_, l)| l).max().unwrap_or(0);
        let live: BTreeMap<u64, (u64, u64)> = batches
            .into_iter()
            .filter(|(seq, _)| !done.contains(seq))
            .collect();
        let mut live_records: BTreeMap<u64, Record> = BTreeMap::new();
        let mut cursor = None;
        let mut unpacked = 0u64;
        for seg in &segments {
            let bytes = fs::read(&seg.path).map_err(|e| with_path(&seg.path, e))?;
            scan(
                &bytes[..(seg.bytes as usize).min(bytes.len())],
                |at, entry| {
                    if let Entry::Record { id, record } = entry {
                        if id > packed_upto {
                            unpacked += 1;
                            cursor.get_or_insert(Pos {
                                segment: seg.first_id,
                                offset: at,
                            });
                        } else if live.values().any(|&(f, l)| (f..=l).contains(&id)) {
                            live_records.insert(id, record);
                        }
                    }
                },
            );
        }
        for (seq, (first, last)) in live {
            let records: Vec<Record> = (first..=last)
                .filter_map(|id| live_records.remove(&id))
                .collect();
            let missing = (last - first + 1).saturating_sub(records.len() as u64);
            if missing > 0 {
                counters.lost_records += missing;
                recovery.notes.push(format!(
                    "batch {seq}: {missing} of its records were lost to corruption"
                ));
            }
            recovery.unacked.push(Unacked {
                seq,
                first,
                last,
                records,
            });
        }
        recovery.unpacked = unpacked;

        let next_id = max_id
            .max(packed_upto)
            .max(segments.last().map_or(0, |s| s.first_id.saturating_sub(1)))
            + 1;
        if segments.is_empty() {
            let made = match Self::create_segment(&cfg.dir, next_id) {
                // A full disk: the reserve makes room for the first segment.
                Err(e)
                    if disk_full(&e)
                        && fleetmq_net::files::give_up_reserve(&Self::reserve_path(&cfg.dir)) =>
                {
                    Self::create_segment(&cfg.dir, next_id)
                }
                other => other,
            };
            segments.push(made?);
        }
        Self::keep_reserve(&cfg.dir);
        let active = segments.last().map(|s| s.path.clone()).unwrap_or_default();
        let file = OpenOptions::new()
            .append(true)
            .open(&active)
            .map_err(|e| with_path(&active, e))?;
        let end = segments.last().map_or(HEADER, |s| s.bytes);
        let cursor = cursor.unwrap_or(Pos {
            segment: segments.last().map_or(next_id, |s| s.first_id),
            offset: end,
        });
        let total_bytes = segments.iter().map(|s| s.bytes).sum();
        let spool = Spool {
            cfg,
            segments,
            file,
            next_id,
            cursor,
            unpacked,
            packed_upto,
            total_bytes,
            dirty_since: None,
            full_episode: false,
            tail: (unpacked == 0).then(Tail::default),
            counters,
        };
        Ok((spool, recovery))
    }

    pub(super) fn create_segment(dir: &Path, first_id: u64) -> io::Result<Segment> {
        let path = dir.join(segment_name(first_id));
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| with_path(&path, e))?;
        f.write_all(MAGIC).map_err(|e| with_path(&path, e))?;
        f.sync_all().map_err(|e| with_path(&path, e))?;
        if let Ok(d) = File::open(dir) {
            // Make the new name durable; not every file system allows this.
            let _ = d.sync_all();
        }
        Ok(Segment {
            first_id,
            path,
            bytes: HEADER,
        })
    }
}
