# Flags live in targets: troupe_flags carries the language level, warnings and
# sanitizer options to every target of the project (never installed).
add_library(troupe_flags INTERFACE)
target_compile_features(troupe_flags INTERFACE cxx_std_20)
target_compile_options(troupe_flags INTERFACE
  $<$<CXX_COMPILER_ID:GNU,Clang>:-Wall -Wextra -Wpedantic -Wno-missing-field-initializers>)

if(TROUPE_SANITIZE)
  string(REPLACE ";" "," _san "${TROUPE_SANITIZE}")
  target_compile_options(troupe_flags INTERFACE -fsanitize=${_san} -fno-omit-frame-pointer -fno-sanitize-recover=all)
  target_link_options(troupe_flags INTERFACE -fsanitize=${_san})
endif()

# The libFuzzer build: every target's code (the wire decoder in the library
# above all) carries the coverage instrumentation that guides the fuzzer; only
# fuzz targets link libFuzzer itself (-fsanitize=fuzzer, tests/fuzz).
if(TROUPE_BUILD_FUZZ)
  target_compile_options(troupe_flags INTERFACE -fsanitize=fuzzer-no-link)
endif()
