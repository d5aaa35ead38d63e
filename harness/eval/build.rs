//! Bake libtorch's directory into the RUNPATH so binaries and tests run with no environment set
//! (cargo overrides LD_LIBRARY_PATH, see docs/architecture.md).
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(libtorch) = std::env::var("LIBTORCH") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{libtorch}/lib");
    }
}
