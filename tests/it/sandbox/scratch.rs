//! The scratch quota is enforced at each write and create, through the real sandbox:
//! a guest writing a big file in a few large writes, and one creating many empty
//! files, both end `scratch_exceeded`, and what the host disk holds for them never
//! passes the quota (sampled while the guests keep their files open, and reported by
//! the guests themselves).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use edgebox_wire::sandbox::JobState;
use serde_json::json;

use super::Sandbox;
use crate::support::{self, TestDir};

const IMPORTS: &str = r#"
  (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_filestat_get" (func $stat (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))"#;

/// Busy work after the writes, so the host can look at the directory meanwhile.
const SPIN: &str = r#"
    (local.set $n (i32.const 0))
    (loop $s
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (br_if $s (i32.lt_u (local.get $n) (i32.const 400000000))))"#;

/// Opens `/scratch/big` and writes 768 KiB to it four times (errors ignored), then
/// exits with the file's size in units of 32 KiB (exit codes stop at 125).
fn big_writer() -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 20)
  (data (i32.const 64) "big")
  (func (export "_start") (local $fd i32) (local $i i32) (local $n i32)
    (memory.fill (i32.const 4096) (i32.const 120) (i32.const 786432))
    (i32.store (i32.const 0) (i32.const 4096))
    (i32.store (i32.const 4) (i32.const 786432))
    ;; fd 3 is /scratch; O_CREAT | O_TRUNC
    (if (i32.ne (call $open (i32.const 3) (i32.const 0) (i32.const 64) (i32.const 3) (i32.const 9)
                  (i64.const 536870911) (i64.const 536870911) (i32.const 0) (i32.const 24))
                (i32.const 0))
      (then (call $exit (i32.const 120))))
    (local.set $fd (i32.load (i32.const 24)))
    (loop $w
      (drop (call $write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 16)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $w (i32.lt_u (local.get $i) (i32.const 4))))
    (drop (call $stat (local.get $fd) (i32.const 128)))
    {SPIN}
    (call $exit (i32.wrap_i64 (i64.div_u (i64.load (i32.const 160)) (i64.const 32768))))))"#
    )
}

/// Tries to create 2000 empty files in `/scratch`, then exits with how many it could.
fn file_maker() -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (data (i32.const 64) "faaa")
  (func (export "_start") (local $i i32) (local $ok i32) (local $n i32)
    (loop $c
      (i32.store8 (i32.const 65) (i32.add (i32.const 97) (i32.and (local.get $i) (i32.const 15))))
      (i32.store8 (i32.const 66)
        (i32.add (i32.const 97) (i32.and (i32.shr_u (local.get $i) (i32.const 4)) (i32.const 15))))
      (i32.store8 (i32.const 67)
        (i32.add (i32.const 97) (i32.and (i32.shr_u (local.get $i) (i32.const 8)) (i32.const 15))))
      ;; O_CREAT | O_EXCL
      (if (i32.eqz (call $open (i32.const 3) (i32.const 0) (i32.const 64) (i32.const 4) (i32.const 5)
                     (i64.const 536870911) (i64.const 536870911) (i32.const 0) (i32.const 24)))
        (then
          (local.set $ok (i32.add (local.get $ok) (i32.const 1)))
          (drop (call $close (i32.load (i32.const 24))))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $c (i32.lt_u (local.get $i) (i32.const 2000))))
    {SPIN}
    (call $exit (local.get $ok))))"#
    )
}

/// Bytes allocated and entries under every scratch directory in `tmp`.
fn scratch_usage(tmp: &Path) -> (u64, u64) {
    let (mut bytes, mut entries) = (0, 0);
    let Ok(dirs) = std::fs::read_dir(tmp) else {
        return (0, 0);
    };
    for dir in dirs.flatten() {
        if !dir
            .file_name()
            .to_string_lossy()
            .starts_with("edgebox-scratch-")
        {
            continue;
        }
        for entry in std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(meta) = entry.path().symlink_metadata() {
                entries += 1;
                bytes += meta.blocks() * 512;
            }
        }
    }
    (bytes, entries)
}

#[tokio::test(flavor = "multi_thread")]
async fn scratch_quota_is_enforced_at_each_write_and_create() {
    let tmp = TestDir::new();
    let tmp_path = tmp.path().to_str().unwrap().to_owned();
    let sandbox = Sandbox::start_with_env(
        "max_concurrent_jobs = 2\nscratch_size = \"2MiB\"\nscratch_files = 50\n",
        &[("TMPDIR", &tmp_path)],
    );
    let quota_bytes: u64 = 2 << 20;
    for (source, what) in [(big_writer(), "big file"), (file_maker(), "many files")] {
        let id = sandbox
            .submit(json!({"language": "wat", "source": source, "scratch": true,
                           "limits": {"wall_ms": 30000, "cpu_ms": 30000}}))
            .await;
        // Sample the host side until the job ends: never over the quota.
        let seen = std::sync::Mutex::new((0u64, 0u64));
        let view = support::eventually(
            &format!("the {what} job to finish"),
            Duration::from_secs(60),
            || async {
                let (bytes, entries) = scratch_usage(tmp.path());
                assert!(bytes <= quota_bytes, "{what}: {bytes} bytes on disk");
                assert!(entries <= 50, "{what}: {entries} entries on disk");
                {
                    let mut most = seen.lock().unwrap();
                    *most = (most.0.max(bytes), most.1.max(entries));
                }
                let view = sandbox.job(&id).await.expect("job");
                view.head.state.is_final().then_some(view)
            },
        )
        .await;
        assert_eq!(
            view.head.state,
            JobState::ScratchExceeded,
            "{what}: {:?}",
            view.head
        );
        assert!(
            view.head.error.as_deref().unwrap_or("").contains("scratch"),
            "{:?}",
            view.head
        );
        let seen = *seen.lock().unwrap();
        let reported = view.head.exit_code.expect("the guest exits on its own");
        match what {
            "big file" => {
                // Two of the four 768 KiB writes fit in 2 MiB; the third is refused.
                assert_eq!(reported as u64 * 32768, 2 * 786432, "file size");
                assert!(seen.0 >= 786432, "the sampler saw the file: {seen:?}");
            }
            _ => {
                assert_eq!(reported, 50, "files created");
                assert!(seen.1 >= 1, "the sampler saw the files: {seen:?}");
            }
        }
    }
    // The scratch directories are gone once the jobs are.
    assert_eq!(scratch_usage(tmp.path()), (0, 0));
    // A job within the quota is untouched by it.
    let result = sandbox
        .run(json!({"language": "wat", "source": super::bounds::printer(1, 1000), "scratch": true}))
        .await;
    assert_eq!(result.head.state, JobState::Succeeded, "{:?}", result.head);
}
