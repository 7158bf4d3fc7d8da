// See issue 4: five mistakes, five compile errors with file:line and key.
gevaldi::main!("five_mistakes.toml");
