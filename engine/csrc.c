// The C side lives in csrc/ (its own folder, per DESIGN.md); cgo only compiles
// C files in a package's directory, so this file pulls it in.
#include "../csrc/nielsgpt.c"
