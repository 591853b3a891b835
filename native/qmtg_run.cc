// qmtg-run: runs float32 NHWC tiles through a TVM-compiled (Relax VM) generator module.
//
//   qmtg-run --module ./model.so --input tiles.npy --output out.npy [--warmup K] [--runs R] [--threads T]
//   qmtg-run --module ./model.so --input tiles.f32 --raw --shape N,H,W,C --output out.npy
//   qmtg-run --check-input tiles.npy [more.npy ...]   (reads and reports each input; no module)
//
// The module is what convert/tvm_build.py exports (`tvm.compile` + `export_library`): its Relax
// VM entry `main` maps one (1,H,W,C) float32 tile to an output of the same layout. Each of the N
// input tiles is run once per timed pass (--runs passes, after --warmup untimed calls on the first
// tile); the outputs of the first pass are written, stacked along the batch axis, as a .npy.
// stdout gets one JSON line of timings; errors go to stderr with a non-zero exit and no output
// file. Threads: --threads sets TVM_NUM_THREADS (otherwise the environment's value or TVM's
// default applies); the JSON reports the thread count the TVM runtime actually uses.
//
// Driving the VM from C++ (TVM 0.27, mirrors tvm.runtime.vm.VirtualMachine in Python):
//   Module lib = Module::LoadFromFile(path)           // dlopen + deserialize the VM executable
//   Module vm  = lib->GetFunction("vm_load_executable")()
//   vm->GetFunction("vm_initialization")(kDLCPU, 0, kPooled)   // (device type, id, allocator) triples
//   Tensor y   = vm->GetFunction("main")(x)

#include <sys/resource.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <dlpack/dlpack.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include "npy_io.h"

namespace ffi = tvm::ffi;

namespace {

constexpr int kPooledAllocator = 2;  // tvm::runtime::memory::AllocatorType::kPooled

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct RunError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

const char* kUsage =
    "usage: qmtg-run --module ./model.so --input tiles.npy --output out.npy\n"
    "                [--raw --shape N,H,W,C] [--warmup K] [--runs R] [--threads T]\n"
    "       qmtg-run --check-input tiles.npy [more.npy ...]   (read each input, report, run nothing)\n"
    "  --module   TVM Relax module (.so) exported by qmtgan convert (tvm-* bundles)\n"
    "  --input    float32 NHWC tiles: .npy (v1/v2/v3, '<f4', C order), or raw float32 with --raw\n"
    "  --raw      the input is raw little-endian float32; --shape N,H,W,C gives its shape\n"
    "  --output   .npy file for the outputs (written to a temporary file, then renamed)\n"
    "  --warmup   untimed calls on the first tile before timing (default 1)\n"
    "  --runs     timed passes over all tiles (default 1); outputs come from the first pass\n"
    "  --threads  TVM worker threads (sets TVM_NUM_THREADS)\n";

struct Options {
  std::string module, input, output;
  bool raw = false;
  std::vector<int64_t> shape;
  int warmup = 1, runs = 1, threads = 0;
};

long parse_int(const std::string& flag, const std::string& text, long min_value) {
  char* end = nullptr;
  errno = 0;
  long v = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno != 0 || v < min_value || v > 1000000000L)
    throw UsageError(flag + " expects an integer >= " + std::to_string(min_value) + ", got '" + text + "'");
  return v;
}

std::vector<int64_t> parse_shape(const std::string& text) {
  std::vector<int64_t> shape;
  std::stringstream ss(text);
  std::string part;
  while (std::getline(ss, part, ',')) shape.push_back(parse_int("--shape", part, 1));
  if (shape.size() == 3) shape.insert(shape.begin(), 1);
  if (shape.size() != 4) throw UsageError("--shape expects N,H,W,C (or H,W,C), got '" + text + "'");
  return shape;
}

Options parse_args(int argc, char** argv) {
  Options o;
  bool have_shape = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      std::cout << kUsage;
      std::exit(0);
    }
    if (a == "--raw") {
      o.raw = true;
      continue;
    }
    std::string value;
    if (size_t eq = a.find('='); a.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = a.substr(eq + 1);
      a = a.substr(0, eq);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      throw UsageError(a.rfind("--", 0) == 0 ? a + " needs a value" : "unexpected argument '" + a + "'");
    }
    if (a == "--module") o.module = value;
    else if (a == "--input") o.input = value;
    else if (a == "--output") o.output = value;
    else if (a == "--shape") o.shape = parse_shape(value), have_shape = true;
    else if (a == "--warmup") o.warmup = static_cast<int>(parse_int(a, value, 0));
    else if (a == "--runs") o.runs = static_cast<int>(parse_int(a, value, 1));
    else if (a == "--threads") o.threads = static_cast<int>(parse_int(a, value, 1));
    else throw UsageError("unknown option '" + a + "'");
  }
  if (o.module.empty() || o.input.empty() || o.output.empty())
    throw UsageError("--module, --input and --output are required");
  if (o.raw != have_shape) throw UsageError("--raw and --shape N,H,W,C go together");
  // dlopen() searches the library path for a name without a slash: make it a path.
  if (o.module.find('/') == std::string::npos) o.module = "./" + o.module;
  return o;
}

// An ffi::Error as "Kind: message" (the full backtrace is not useful to a caller).
std::string ffi_message(const ffi::Error& e) {
  std::string msg = e.message();
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
  return e.kind() + ": " + msg;
}

struct AlignedCPUAlloc {
  void AllocData(DLTensor* t) {
    size_t bytes = std::max<size_t>(ffi::GetDataSize(*t), 64);
    t->data = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!t->data) throw RunError("out of memory allocating " + std::to_string(bytes) + " bytes");
  }
  void FreeData(DLTensor* t) { std::free(t->data); }
};

// dlopen() reports a module for another CPU as "cannot open shared object file": say what it is.
void check_elf_machine(const std::string& path) {
#if defined(__x86_64__)
  const int here = 62;
  const char* here_name = "x86_64";
#elif defined(__aarch64__)
  const int here = 183;
  const char* here_name = "aarch64";
#else
  return;
#endif
  unsigned char head[20] = {0};
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw RunError(path + ": cannot open module (" + std::strerror(errno) + ")");
  size_t got = std::fread(head, 1, sizeof head, f);
  std::fclose(f);
  if (got < sizeof head || std::memcmp(head, "\x7f" "ELF", 4) != 0)
    throw RunError(path + ": not a shared library (no ELF header); expected a TVM module exported as .so");
  const int machine = head[18] | (head[19] << 8);
  if (machine != here) {
    const char* name = machine == 62 ? "x86_64" : machine == 183 ? "aarch64" : machine == 40 ? "arm" : nullptr;
    throw RunError(path + ": module is built for " + (name ? name : "ELF machine " + std::to_string(machine)) +
                   ", this qmtg-run is " + here_name);
  }
}

class Runner {
 public:
  explicit Runner(const std::string& path) {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) throw RunError(path + ": module not found (" + std::strerror(errno) + ")");
    if (!S_ISREG(st.st_mode)) throw RunError(path + ": module is not a regular file");
    check_elf_machine(path);
    try {
      lib_ = ffi::Module::LoadFromFile(path);
      ffi::Optional<ffi::Function> load = (*lib_)->GetFunction("vm_load_executable", true);
      if (!load.has_value()) throw RunError(path + ": not a Relax VM module (no vm_load_executable)");
      vm_ = load.value()().cast<ffi::Module>();
      ffi::Optional<ffi::Function> init = (*vm_)->GetFunction("vm_initialization", true);
      if (!init.has_value()) throw RunError(path + ": the VM has no vm_initialization");
      init.value()(static_cast<int>(kDLCPU), 0, kPooledAllocator);
      ffi::Optional<ffi::Function> main = (*vm_)->GetFunction("main", true);
      if (!main.has_value()) throw RunError(path + ": the VM has no function 'main'");
      main_ = main.value();
    } catch (const ffi::Error& e) {
      throw RunError(path + ": cannot load the TVM module (" + ffi_message(e) + ")");
    }
  }

  // One tile (1,H,W,C) in, the module's float32 output copied to `out` (appended).
  std::vector<int64_t> run(const ffi::Tensor& input, std::vector<float>* out) {
    ffi::Tensor y;
    try {
      y = main_(input).cast<ffi::Tensor>();
    } catch (const ffi::Error& e) {
      throw RunError("running the module on input of shape " + qmtg::shape_str(shape_of(input)) + " failed: " +
                     ffi_message(e));
    }
    const DLTensor* t = y.GetDLTensorPtr();
    if (t->dtype.code != kDLFloat || t->dtype.bits != 32 || t->dtype.lanes != 1)
      throw RunError("the module returned a non-float32 output");
    if (t->device.device_type != kDLCPU) throw RunError("the module returned an output not on the CPU");
    if (!y.IsContiguous()) throw RunError("the module returned a non-contiguous output");
    if (out) {
      const size_t n = ffi::GetDataSize(*t) / sizeof(float);
      const auto* p = reinterpret_cast<const float*>(static_cast<const char*>(t->data) + t->byte_offset);
      out->insert(out->end(), p, p + n);
    }
    return shape_of(y);
  }

  static std::vector<int64_t> shape_of(const ffi::Tensor& t) {
    return std::vector<int64_t>(t.shape().begin(), t.shape().end());
  }

 private:
  std::optional<ffi::Module> lib_, vm_;  // the VM keeps the library alive; held for clarity
  ffi::Function main_{nullptr};
};

int runtime_threads() {
  if (auto f = ffi::Function::GetGlobal("runtime.NumThreads")) {
    try {
      return (*f)().cast<int>();
    } catch (const ffi::Error&) {
    }
  }
  return 0;
}

double percentile(const std::vector<double>& sorted, double q) {  // numpy's default (linear)
  if (sorted.empty()) return 0.0;
  double pos = q * static_cast<double>(sorted.size() - 1);
  size_t lo = static_cast<size_t>(std::floor(pos));
  size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - static_cast<double>(lo));
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') out += '\\', out += static_cast<char>(c);
    else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else out += static_cast<char>(c);
  }
  return out + "\"";
}

// Peak resident set size in kB. VmHWM belongs to this program's own address space; getrusage's
// ru_maxrss is kept across execve(), so a runner started by a large process (a Python test, a
// benchmark driver) would report its parent's peak. ru_maxrss is the fallback without /proc.
long peak_rss_kb() {
  if (FILE* f = std::fopen("/proc/self/status", "r")) {
    char line[256];
    long kb = -1;
    while (std::fgets(line, sizeof line, f))
      if (std::sscanf(line, "VmHWM: %ld kB", &kb) == 1) break;
    std::fclose(f);
    if (kb > 0) return kb;
  }
  struct rusage ru;
  ::getrusage(RUSAGE_SELF, &ru);
  return static_cast<long>(ru.ru_maxrss);
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

int run(const Options& o) {
  if (!qmtg::host_is_little_endian()) throw RunError("qmtg-run needs a little-endian machine");
  if (o.threads > 0) ::setenv("TVM_NUM_THREADS", std::to_string(o.threads).c_str(), 1);

  qmtg::Float32Array tiles = o.raw ? qmtg::read_raw_f32(o.input, o.shape) : qmtg::read_npy_f32(o.input);
  if (tiles.shape.size() == 3) tiles.shape.insert(tiles.shape.begin(), 1);
  if (tiles.shape.size() != 4)
    throw RunError(o.input + ": expected float32 tiles of shape (N, H, W, C), found shape " +
                   qmtg::shape_str(tiles.shape));
  const int64_t n = tiles.shape[0];
  if (n < 1) throw RunError(o.input + ": no tiles (shape " + qmtg::shape_str(tiles.shape) + ")");
  const size_t tile_values = tiles.data.size() / static_cast<size_t>(n);

  auto t_init = std::chrono::steady_clock::now();
  Runner runner(o.module);
  const double init_ms = ms_since(t_init);

  ffi::Tensor input = ffi::Tensor::FromNDAlloc(AlignedCPUAlloc(), {1, tiles.shape[1], tiles.shape[2], tiles.shape[3]},
                                               DLDataType{kDLFloat, 32, 1}, DLDevice{kDLCPU, 0});
  auto load_tile = [&](int64_t i) {
    std::memcpy(input.GetDLTensorPtr()->data, tiles.data.data() + static_cast<size_t>(i) * tile_values, tile_values * sizeof(float));
  };

  double first_ms = -1.0;
  auto timed_call = [&](std::vector<float>* out, std::vector<int64_t>* shape) {
    auto t0 = std::chrono::steady_clock::now();
    std::vector<int64_t> s = runner.run(input, out);
    double ms = ms_since(t0);
    if (first_ms < 0) first_ms = ms;
    if (shape) *shape = s;
    return ms;
  };

  load_tile(0);
  for (int k = 0; k < o.warmup; ++k) timed_call(nullptr, nullptr);

  std::vector<float> outputs;
  std::vector<int64_t> out_shape, tile_shape;
  std::vector<double> samples;
  samples.reserve(static_cast<size_t>(n) * o.runs);
  for (int r = 0; r < o.runs; ++r) {
    for (int64_t i = 0; i < n; ++i) {
      load_tile(i);
      samples.push_back(timed_call(r == 0 ? &outputs : nullptr, &tile_shape));
      if (r == 0) {
        if (tile_shape.empty()) throw RunError("the module returned a scalar");
        if (i == 0) out_shape = tile_shape;
        else if (tile_shape != out_shape)
          throw RunError("the module's output shape changed between tiles: " + qmtg::shape_str(out_shape) +
                         " then " + qmtg::shape_str(tile_shape));
      }
    }
  }
  const int threads = runtime_threads();

  std::vector<int64_t> stacked = out_shape;
  stacked[0] *= n;
  qmtg::write_npy_f32_atomic(o.output, stacked, outputs.data(), outputs.size());

  std::vector<double> sorted = samples;
  std::sort(sorted.begin(), sorted.end());
  double mean = 0;
  for (double s : samples) mean += s;
  mean /= static_cast<double>(samples.size());

  char buf[512];
  std::snprintf(buf, sizeof buf,
                "{\"tiles\": %lld, \"runs\": %d, \"warmup\": %d, \"first_ms\": %.4f, \"mean_ms\": %.4f, "
                "\"p50_ms\": %.4f, \"p90_ms\": %.4f, \"min_ms\": %.4f, \"max_ms\": %.4f, \"init_ms\": %.4f, "
                "\"peak_rss_kb\": %ld, \"threads\": %d, ",
                static_cast<long long>(n), o.runs, o.warmup, first_ms, mean, percentile(sorted, 0.5),
                percentile(sorted, 0.9), sorted.front(), sorted.back(), init_ms, peak_rss_kb(),
                threads);
  std::cout << buf << "\"module\": " << json_string(o.module) << ", \"output\": " << json_string(o.output)
            << ", \"output_shape\": [";
  for (size_t i = 0; i < stacked.size(); ++i) std::cout << (i ? ", " : "") << stacked[i];
  std::cout << "], \"latencies_ms\": [";  // every timed call, in order (for the bench's percentiles)
  for (size_t i = 0; i < samples.size(); ++i) {
    std::snprintf(buf, sizeof buf, "%s%.4f", i ? ", " : "", samples[i]);
    std::cout << buf;
  }
  std::cout << "]}" << std::endl;
  return 0;
}

}  // namespace

// --check-input FILE...: read each .npy input as a run would and report it, one line per file
// ("ok (shape)" or the reader's error), without loading a module. Exit 0 if all are readable.
int check_inputs(int argc, char** argv) {
  int bad = 0;
  for (int i = 2; i < argc; ++i) {
    try {
      qmtg::Float32Array a = qmtg::read_npy_f32(argv[i]);
      std::cout << "ok " << qmtg::shape_str(a.shape) << "\n";
    } catch (const qmtg::NpyError& e) {
      std::cout << "error " << e.what() << "\n";
      ++bad;
    }
  }
  return bad ? 1 : 0;
}

int main(int argc, char** argv) {
  try {
    if (argc >= 2 && std::string(argv[1]) == "--check-input") return check_inputs(argc, argv);
    return run(parse_args(argc, argv));
  } catch (const UsageError& e) {
    std::cerr << "qmtg-run: " << e.what() << "\n" << kUsage;
    return 2;
  } catch (const ffi::Error& e) {
    std::cerr << "qmtg-run: " << ffi_message(e) << "\n";
  } catch (const std::exception& e) {
    std::cerr << "qmtg-run: " << e.what() << "\n";
  }
  return 1;
}
