//! The files `chip` writes cannot be turned against their owner: `listen --save` never follows a
//! link planted in its folder, saves owner-only files, creates a missing folder 0700 and refuses
//! a folder others can write to or own (before listening); `apply --keys-out` writes through a
//! random, exclusively created temporary name and leaves anything planted at the old predictable
//! one alone.
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Run, command, deliver_vector, fixture, listen, mock, vector_body};

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// `chip listen --key KEY --max 1 --save DIR`.
async fn listen_saving(
    mock: &chip_gate_mock::MockServer,
    key: &std::path::Path,
    dir: &std::path::Path,
) -> common::Listening {
    let args = [
        "--key",
        key.to_str().unwrap(),
        "--max",
        "1",
        "--save",
        dir.to_str().unwrap(),
    ];
    listen(mock, &args).await
}

#[tokio::test(flavor = "multi_thread")]
async fn saving_never_follows_a_planted_link_and_files_are_owner_only() {
    let mock = mock().await;
    let root = tempfile::tempdir().unwrap();
    let victim = root.path().join("victim.txt");
    std::fs::write(&victim, "untouched").unwrap();
    let elsewhere = root.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let save = root.path().join("deliveries");
    std::fs::create_dir_all(&save).unwrap();
    std::fs::set_permissions(&save, std::fs::Permissions::from_mode(0o700)).unwrap();
    // Links planted at the names the first two deliveries would use: one to an existing file of
    // the user's, one dangling (following it would create a file elsewhere).
    symlink(&victim, save.join("0001-purchase.created.sig")).unwrap();
    let dangling = elsewhere.join("created-through-the-link");
    symlink(&dangling, save.join("0002-purchase.created.headers")).unwrap();

    let key = fixture("public_key.pem");
    let mut listening = listen_saving(&mock, &key, &save).await;
    assert_eq!(deliver_vector(&listening.url).await, 200);
    let line = listening.line().await;
    let stem = save.join("0003-purchase.created");
    assert!(
        line.ends_with(&format!("valid  saved {}.*", stem.display())),
        "{line}"
    );
    let out = listening.finish().await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);

    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    assert!(!dangling.exists(), "a file was created through the link");
    assert_eq!(
        names(&save),
        [
            "0001-purchase.created.sig",
            "0002-purchase.created.headers",
            "0003-purchase.created.body.json",
            "0003-purchase.created.headers",
            "0003-purchase.created.sig",
        ]
    );
    for suffix in [".body.json", ".sig", ".headers"] {
        let path = save.join(format!("0003-purchase.created{suffix}"));
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    assert_eq!(
        std::fs::read(save.join("0003-purchase.created.body.json")).unwrap(),
        vector_body()
    );

    // A folder that does not exist yet is created 0700, with its missing parents.
    let fresh = root.path().join("a").join("b");
    let mut listening = listen_saving(&mock, &key, &fresh).await;
    assert_eq!(mode(&fresh), 0o700);
    assert_eq!(deliver_vector(&listening.url).await, 200);
    listening.line().await;
    assert_eq!(listening.finish().await.code, Some(0));
    assert_eq!(mode(&fresh.join("0001-purchase.created.sig")), 0o600);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_folder_others_can_write_to_or_own_is_refused_before_listening() {
    let mock = mock().await;
    let root = tempfile::tempdir().unwrap();
    let key = fixture("public_key.pem");
    let run = run_bounded;
    let refused = |dir: &Path| {
        let mut command = command(&mock, &["listen", "--port", "0", "--max", "1"]);
        command.args([
            "--key",
            key.to_str().unwrap(),
            "--save",
            dir.to_str().unwrap(),
        ]);
        command
    };
    for bits in [0o777, 0o770, 0o1777, 0o702] {
        let dir = root.path().join(format!("shared-{bits:o}"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(bits)).unwrap();
        let out = run(refused(&dir)).await;
        assert_eq!(out.code, Some(2), "{bits:o}: {}", out.stderr);
        assert!(out.stdout.is_empty(), "it listened: {}", out.stdout);
        assert!(
            out.stderr.starts_with(&format!(
                "error: refusing to save into {}: it is writable by other users",
                dir.display()
            )),
            "{}",
            out.stderr
        );
        assert!(
            out.stderr
                .contains(&format!("run `chmod go-w {}`", dir.display())),
            "{}",
            out.stderr
        );
        assert!(names(&dir).is_empty());
    }

    // A folder of another user: as root, one handed to `nobody`; otherwise `/` (root's).
    let theirs = if is_root() {
        let dir = root.path().join("theirs");
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
        dir
    } else {
        Path::new("/").to_owned()
    };
    let out = run(refused(&theirs)).await;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stdout.is_empty());
    assert!(
        out.stderr.contains("it belongs to another user"),
        "{}",
        out.stderr
    );

    // A file is not a folder.
    let file = root.path().join("file");
    std::fs::write(&file, "").unwrap();
    let out = run(refused(&file)).await;
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("not a folder"), "{}", out.stderr);
}

/// Runs `command` to the end, or kills it after 20 s and fails: on a folder it should refuse, a
/// listener would otherwise wait for a delivery forever (and the test with it).
async fn run_bounded(mut command: Command) -> Run {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after 20 s: it listened instead of refusing the folder");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Whether the tests run as root (uid 0): the owner of a file just created says.
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    let file = tempfile::NamedTempFile::new().unwrap();
    file.as_file().metadata().unwrap().uid() == 0
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_out_never_uses_a_file_planted_at_a_predictable_name() {
    let mock = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.toml");
    std::fs::write(
        &file,
        "[[webhook]]\ntitle = \"all\"\ncallback = \"https://shop.example.com/chip\"\nall_events = true\n",
    )
    .unwrap();
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "untouched").unwrap();
    let keys = dir.path().join("keys.pem");

    let mut command = command(
        &mock,
        &[
            "webhooks",
            "apply",
            "-f",
            file.to_str().unwrap(),
            "--yes",
            "--keys-out",
            keys.to_str().unwrap(),
        ],
    );
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = command.spawn().unwrap();
    // Before it gets anywhere near writing: a link at the temporary name it used to pick
    // (`.keys.pem.<pid>.tmp`), pointing at another file of the user's.
    let planted = dir.path().join(format!(".keys.pem.{}.tmp", child.id()));
    symlink(&victim, &planted).unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()),
    )
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.ends_with(&format!("Wrote 1 public key(s) to {}.\n", keys.display())));

    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    assert!(
        std::fs::symlink_metadata(&planted)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the planted link is left alone"
    );
    let meta = std::fs::symlink_metadata(&keys).unwrap();
    assert!(meta.file_type().is_file(), "keys.pem is a file of its own");
    assert_eq!(mode(&keys), 0o600);
    assert!(
        std::fs::read_to_string(&keys)
            .unwrap()
            .contains("-----BEGIN PUBLIC KEY-----")
    );
    // No temporary file is left behind.
    let planted_name = planted.file_name().unwrap().to_str().unwrap().to_owned();
    assert_eq!(names(dir.path()), {
        let mut expected = vec![
            planted_name,
            "f.toml".to_owned(),
            "keys.pem".to_owned(),
            "victim.txt".to_owned(),
        ];
        expected.sort();
        expected
    });
}
