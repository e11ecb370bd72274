//! The C entry point. The binary is `no_main` (see main.rs for why std's
//! entry point would turn a missing console into a kernel panic), so the C
//! runtime calls this `main` directly. std's `env::args` is not filled in
//! without std's own entry point on every libc, so the arguments are taken
//! from here and handed to `crate::run`.

/// What the C runtime's start code calls after setting up libc.
///
/// # Safety
///
/// Called by the C runtime only, with `argc` valid strings in `argv`.
#[no_mangle]
pub unsafe extern "C" fn main(argc: libc::c_int, argv: *const *const libc::c_char) -> libc::c_int {
    let args: Vec<String> = (0..argc.max(0) as usize)
        .map(|i| {
            // SAFETY: the C runtime passes argc valid NUL-terminated strings,
            // so argv[i] for i < argc is in bounds and points at one.
            let arg = unsafe { std::ffi::CStr::from_ptr(*argv.add(i)) };
            arg.to_string_lossy().into_owned()
        })
        .collect();
    crate::run(&args)
}
