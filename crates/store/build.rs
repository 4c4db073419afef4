// `sqlx::migrate!` reads the migration folders at compile time but does not
// tell cargo about them, so a new migration file would not rebuild the
// crate and an incremental build would run without it (sqlx's own docs
// suggest this script).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
