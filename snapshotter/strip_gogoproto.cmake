# Copies a containerd .proto without gogoproto (Go-only code generation hints): its import, its
# options and its field options. Usage: cmake -DIN=src.proto -DOUT=dst.proto -P strip_gogoproto.cmake
file(READ "${IN}" text)
string(REGEX REPLACE "import weak \"gogoproto/gogo.proto\";" "" text "${text}")
string(REGEX REPLACE "[ \t]*option \\(gogoproto\\.[^;]*;" "" text "${text}")
string(REGEX REPLACE " *\\[\\(gogoproto\\.[^]]*\\]" "" text "${text}")
if(text MATCHES "gogoproto")
  message(FATAL_ERROR "${IN}: gogoproto left after stripping")
endif()
file(WRITE "${OUT}" "${text}")
