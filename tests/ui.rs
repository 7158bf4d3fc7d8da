//! The compile errors of `gevaldi::main!`, pinned with trybuild.
#[test]
fn main_macro_compile_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
