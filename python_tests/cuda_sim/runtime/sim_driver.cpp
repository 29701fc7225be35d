// Runs one harness entry point out of process, for the sanitizer builds (their
// runtimes must come first in a process, which a Python interpreter cannot
// arrange for a library it loads late):
//
//   sim_driver LIB REQUEST RESPONSE
//
// REQUEST (little-endian): "SIMQ", i32 order, u64 seed, i32 reduce order,
// i32 poison byte, u32 name length + name, u32 buffer count, each: i64 size
// (-1: null pointer) + that many bytes, u32 count + i64 integers, u32 count +
// f64 doubles. The buffers are malloc'd with their exact sizes (so ASan sees
// overruns), the entry point sim_op_<name> of LIB is called, and RESPONSE gets
// "SIMR", i32 status, u32 length + error message, 4 x i64 results, and every
// buffer's final bytes (u32 count, each: i64 size + bytes).
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
  FILE* f;
  template <typename T>
  void put(const T& v) {
    if (std::fwrite(&v, sizeof(T), 1, f) != 1) die("write failed");
  }
  void bytes(const void* p, size_t n) {
    if (n && std::fwrite(p, 1, n, f) != n) die("write failed");
  }
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) die("usage: sim_driver LIB REQUEST RESPONSE");
  Reader r;
  {
    FILE* f = std::fopen(argv[2], "rb");
    if (!f) die(std::string("cannot open ") + argv[2]);
    unsigned char buf[1 << 16];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) r.data.insert(r.data.end(), buf, buf + n);
    std::fclose(f);
  }
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

  void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!lib) die(std::string("dlopen: ") + dlerror());
  using Configure = void (*)(int, unsigned long long, int, int);
  using Op = int (*)(void* const*, const int64_t*, const double*, int64_t*);
  using LastError = const char* (*)();
  auto configure = reinterpret_cast<Configure>(dlsym(lib, "sim_configure"));
  auto op = reinterpret_cast<Op>(dlsym(lib, ("sim_op_" + name).c_str()));
  auto last_error = reinterpret_cast<LastError>(dlsym(lib, "sim_last_error"));
  if (!configure || !op || !last_error) die("entry point sim_op_" + name + " not found in " + argv[1]);
  configure(order, seed, reduce, poison);
  int64_t ret[4] = {0, 0, 0, 0};
  const int32_t status = op(ptrs.data(), ints.data(), dbls.data(), ret);
  const std::string err = status ? last_error() : "";

  FILE* f = std::fopen(argv[3], "wb");
  if (!f) die(std::string("cannot write ") + argv[3]);
  Writer w{f};
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
  std::fclose(f);
  for (void* p : ptrs) std::free(p);
  return 0;
}
