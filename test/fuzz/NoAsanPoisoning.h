// Force-included (-include) into every file of the fuzz build (-DATTN_FUZZ=ON).
//
// LLVM's headers poison and unpoison BumpPtrAllocator slabs (llvm/Support/Allocator.h) when the
// including file is built with ASan. Our code is; Debian's libMLIR.so/libLLVM.so are not. The
// same allocator (e.g. the MLIRContext's attribute uniquer) is then used from both: a slab
// poisoned by our inlined allocator code is handed out unpoisoned-never by the library's copy,
// and ASan reports a use-after-poison that is not a bug. Turning the calls into no-ops in our
// code makes both sides agree (no slab poisoning), as in the library. Real heap errors are
// still caught: malloc/new redzones and use-after-free do not depend on these calls.
#ifndef TEST_FUZZ_NOASANPOISONING_H
#define TEST_FUZZ_NOASANPOISONING_H
#include <sanitizer/asan_interface.h> // declare first; Compiler.h's later include is then a no-op
#define __asan_poison_memory_region(p, size) ((void)(p), (void)(size))
#define __asan_unpoison_memory_region(p, size) ((void)(p), (void)(size))
#endif
