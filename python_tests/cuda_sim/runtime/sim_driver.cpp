// Runs harness entry points out of process, for the sanitizer builds (their
// runtimes must come first in a process, which a Python interpreter cannot
// arrange for a library it loads late):
//
//   sim_driver LIB      (requests on stdin, responses on stdout, until EOF)
//
// Each message is a u64 byte count and then the bytes (little-endian).
// Request: "SIMQ", i32 order, u64 seed, i32 reduce order, i32 poison byte,
// u32 name length + name, u32 buffer count, each: i64 size (-1: null pointer)
// + that many bytes, u32 count + i64 integers, u32 count + f64 doubles. The
// buffers are malloc'd with their exact sizes (so ASan sees overruns), the
// entry point sim_op_<name> of LIB is called, and the response is "SIMR",
// i32 status, u32 length + error message, 4 x i64 results, and every buffer's
// final bytes (u32 count, each: i64 size + bytes). One process serves many
// calls, so the threaded build creates its worker threads once.
#include <dlfcn.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

[[noreturn]] void die(const std::string& msg) {
  std::fprintf(stderr, "sim_driver: %s\n", msg.c_str());
  std::exit(2);
}

struct Reader {
  std::vector<unsigned char> data;
  size_t pos = 0;
  void need(size_t n) {
    if (pos + n > data.size()) die("truncated request");
  }
  template <typename T>
  T get() {
    need(sizeof(T));
    T v;
    std::memcpy(&v, data.data() + pos, sizeof(T));
    pos += sizeof(T);
    return v;
  }
  void bytes(void* out, size_t n) {
    need(n);
    if (n) std::memcpy(out, data.data() + pos, n);
    pos += n;
  }
};

struct Writer {
  std::vector<unsigned char> data;
  template <typename T>
  void put(const T& v) {
    bytes(&v, sizeof(T));
  }
  void bytes(const void* p, size_t n) {
    const unsigned char* q = static_cast<const unsigned char*>(p);
    data.insert(data.end(), q, q + n);
  }
};

bool read_all(void* p, size_t n) {
  unsigned char* q = static_cast<unsigned char*>(p);
  while (n > 0) {
    const size_t got = std::fread(q, 1, n, stdin);
    if (got == 0) return false;
    q += got;
    n -= got;
  }
  return true;
}

struct Lib {
  using Configure = void (*)(int, unsigned long long, int, int);
  using Op = int (*)(void* const*, const int64_t*, const double*, int64_t*);
  using LastError = const char* (*)();
  void* handle;
  Configure configure;
  LastError last_error;
};

std::vector<unsigned char> serve(const Lib& lib, Reader& r) {
  char magic[4];
  r.bytes(magic, 4);
  if (std::memcmp(magic, "SIMQ", 4) != 0) die("bad request");
  const int32_t order = r.get<int32_t>();
  const uint64_t seed = r.get<uint64_t>();
  const int32_t reduce = r.get<int32_t>();
  const int32_t poison = r.get<int32_t>();
  std::string name(r.get<uint32_t>(), '\0');
  r.bytes(name.data(), name.size());
  std::vector<void*> ptrs(r.get<uint32_t>());
  std::vector<int64_t> sizes(ptrs.size());
  for (size_t k = 0; k < ptrs.size(); ++k) {
    sizes[k] = r.get<int64_t>();
    if (sizes[k] < 0) {
      ptrs[k] = nullptr;
      continue;
    }
    ptrs[k] = std::malloc(size_t(sizes[k] > 0 ? sizes[k] : 1));
    r.bytes(ptrs[k], size_t(sizes[k]));
  }
  std::vector<int64_t> ints(r.get<uint32_t>());
  for (auto& v : ints) v = r.get<int64_t>();
  std::vector<double> dbls(r.get<uint32_t>());
  for (auto& v : dbls) v = r.get<double>();

  auto op = reinterpret_cast<Lib::Op>(dlsym(lib.handle, ("sim_op_" + name).c_str()));
  if (!op) die("entry point sim_op_" + name + " not found");
  lib.configure(order, seed, reduce, poison);
  int64_t ret[4] = {0, 0, 0, 0};
  const int32_t status = op(ptrs.data(), ints.data(), dbls.data(), ret);
  const std::string err = status ? lib.last_error() : "";

  Writer w;
  w.bytes("SIMR", 4);
  w.put(status);
  w.put(uint32_t(err.size()));
  w.bytes(err.data(), err.size());
  for (int64_t v : ret) w.put(v);
  w.put(uint32_t(ptrs.size()));
  for (size_t k = 0; k < ptrs.size(); ++k) {
    w.put(sizes[k]);
    if (ptrs[k]) w.bytes(ptrs[k], size_t(sizes[k]));
  }
  for (void* p : ptrs) std::free(p);
  return std::move(w.data);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) die("usage: sim_driver LIB < requests > responses");
  Lib lib;
  lib.handle = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!lib.handle) die(std::string("dlopen: ") + dlerror());
  lib.configure = reinterpret_cast<Lib::Configure>(dlsym(lib.handle, "sim_configure"));
  lib.last_error = reinterpret_cast<Lib::LastError>(dlsym(lib.handle, "sim_last_error"));
  if (!lib.configure || !lib.last_error) die(std::string("not a harness library: ") + argv[1]);
  uint64_t size;
  while (read_all(&size, sizeof size)) {
    Reader r;
    r.data.resize(size);
    if (!read_all(r.data.data(), size)) die("truncated request");
    const std::vector<unsigned char> out = serve(lib, r);
    const uint64_t n = out.size();
    if (std::fwrite(&n, sizeof n, 1, stdout) != 1 || std::fwrite(out.data(), 1, n, stdout) != n) die("write failed");
    std::fflush(stdout);
  }
  return 0;
}
