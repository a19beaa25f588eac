// The CpuQuantizedMatmul primitive: input checks, a worker pool splitting the output columns over
// the cores, the runtime AVX2/FMA choice and the scalar kernel used without them.
#include "qmm.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "mlx/allocator.h"
#include "mlx/backend/cpu/encoder.h"

#include "qmm_kernel.h"

namespace pensieve::kernels {

namespace {

// Multiply-adds (rows * n * k) below which another thread costs more than it saves. Alone, a
// 576 x 576 matmul of one row gains from two threads; inside a pipelined decode step the other core
// is better left to Python building the next step's graph: with 2^21 a one-row step of the default
// model ran ~15% faster than with 2^17, while its lm_head and batched matmuls still split.
constexpr int64_t kMinWorkPerThread = 1 << 21;

// Threads a matmul is split over at most: decode matmuls are memory-bound well before this.
constexpr int kMaxThreads = 8;
static_assert(kMaxThreads < 256, "WorkerPool packs the part count into 8 bits");

// How long an idle worker (or a caller waiting for workers) spins before sleeping. Waking a sleeping
// thread costs tens of microseconds on a VM, as much as a small matmul, while a decode step issues
// matmuls back to back; spinning halved the matmul time of a batch-8 step here.
constexpr std::chrono::microseconds kSpin{100};

bool cpu_has_avx2() {
  static const bool supported = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return supported;
}

std::atomic<bool> simd_enabled{true};

bool simd_active() {
  return cpu_has_avx2() && simd_enabled.load(std::memory_order_relaxed);
}

// Persistent threads that, with the calling thread, split one matmul's columns: MLX runs a stream's
// tasks on one scheduler thread, so without them a quantized matmul uses one core.
class WorkerPool {
 public:
  // The process's pool. A forked child gets its own: the parent's threads do not exist there.
  static WorkerPool& instance() {
    static std::mutex mu;
    static WorkerPool* pool = nullptr;
    static pid_t owner = 0;
    std::lock_guard<std::mutex> lock(mu);
    if (pool == nullptr || owner != getpid()) {
      pool = new WorkerPool(usable_cores() - 1); // never freed: workers park until exit
      owner = getpid();
    }
    return *pool;
  }

  // Cores this process may run on (its affinity mask, not the machine's count), at most kMaxThreads.
  static int usable_cores() {
    cpu_set_t set;
    int cores = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
    return std::clamp(cores, 1, kMaxThreads);
  }

  // Threads a job can use, the caller included.
  int size() const {
    return static_cast<int>(workers_.size()) + 1;
  }

  // Runs task(part) for part in [0, parts), parts <= size(); the caller runs part 0. A second
  // caller arriving while a job runs does its parts itself instead of waiting.
  void run(int parts, const std::function<void(int)>& task) {
    std::unique_lock<std::mutex> job(job_mu_, std::try_to_lock);
    if (parts <= 1 || !job.owns_lock()) {
      for (int part = 0; part < parts; ++part) {
        task(part);
      }
      return;
    }
    task_ = &task;
    error_ = nullptr;
    pending_.store(parts - 1, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mu_);
      const uint64_t generation = (job_.load(std::memory_order_relaxed) >> 8) + 1;
      job_.store(generation << 8 | static_cast<uint64_t>(parts), std::memory_order_release);
    }
    wake_.notify_all();
    std::exception_ptr error;
    try {
      task(0);
    } catch (...) {
      error = std::current_exception();
    }
    if (!spin_until([this] { return pending_.load(std::memory_order_acquire) == 0; })) {
      std::unique_lock<std::mutex> lock(mu_);
      done_.wait(lock, [this] { return pending_.load(std::memory_order_acquire) == 0; });
    }
    if (!error) {
      error = error_;
    }
    if (error) {
      std::rethrow_exception(error);
    }
  }

 private:
  explicit WorkerPool(int workers) {
    for (int index = 1; index <= workers; ++index) {
      workers_.emplace_back([this, index] { work(index); });
    }
  }

  template <typename Ready>
  static bool spin_until(Ready ready) {
    const auto until = std::chrono::steady_clock::now() + kSpin;
    while (!ready()) {
      for (int i = 0; i < 64; ++i) {
        __builtin_ia32_pause();
      }
      if (std::chrono::steady_clock::now() > until) {
        return ready();
      }
    }
    return true;
  }

  void work(int index) {
    uint64_t seen = 0;
    for (;;) {
      auto fresh = [&] { return job_.load(std::memory_order_acquire) != seen; };
      if (!spin_until(fresh)) {
        std::unique_lock<std::mutex> lock(mu_);
        wake_.wait(lock, fresh);
      }
      seen = job_.load(std::memory_order_acquire);
      if (index >= static_cast<int>(seen & 0xFF)) {
        continue;
      }
      try {
        (*task_)(index);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu_);
        if (!error_) {
          error_ = std::current_exception();
        }
      }
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lock(mu_);
        done_.notify_one();
      }
    }
  }

  std::vector<std::thread> workers_;
  std::mutex job_mu_; // one job at a time
  std::mutex mu_; // pairs with the condition variables; guards error_
  std::condition_variable wake_;
  std::condition_variable done_;
  // generation << 8 | parts, stored last to start a job: one word, so a late worker never pairs one
  // job's generation with another's part count. Publishes task_ and pending_.
  std::atomic<uint64_t> job_{0};
  std::atomic<int> pending_{0}; // workers still running the current job
  const std::function<void(int)>* task_ = nullptr;
  std::exception_ptr error_;
};

// A view of an input the task can read after eval_cpu returns: raw pointer, shape and strides.
struct Input {
  const void* data;
  mx::Shape shape;
  mx::Strides strides;
  size_t size;
  bool row_contiguous;

  explicit Input(const mx::array& a)
      : data(a.data<void>()),
        shape(a.shape()),
        strides(a.strides()),
        size(a.size()),
        row_contiguous(a.flags().row_contiguous) {}

  // The elements in row-major order: the data itself, or a copy gathered into storage.
  template <typename T>
  const T* row_major(std::vector<T>& storage) const {
    const T* src = static_cast<const T*>(data);
    if (row_contiguous) {
      return src;
    }
    storage.resize(size);
    const int ndim = static_cast<int>(shape.size());
    std::vector<int> index(ndim, 0);
    int64_t offset = 0;
    for (size_t i = 0; i < size; ++i) {
      storage[i] = src[offset];
      for (int d = ndim - 1; d >= 0; --d) {
        offset += strides[d];
        if (++index[d] < shape[d]) {
          break;
        }
        offset -= strides[d] * shape[d];
        index[d] = 0;
      }
    }
    return storage.data();
  }
};

void require(bool condition, const std::string& message) {
  if (!condition) {
    throw std::invalid_argument("[pensieve quantized_matmul] " + message);
  }
}

// Per group scale * dot(x_g, q_g) + bias * sum(x_g), with the group sums of x computed once.
template <int Bits>
void qmm_scalar_bits(const QmmArgs& a, int n_begin, int n_end) {
  constexpr int per_word = 32 / Bits;
  constexpr uint32_t mask = (1u << Bits) - 1;
  const int groups = a.k / a.group_size;
  const int words_per_group = a.group_size / per_word;
  std::vector<float> x_sums(static_cast<size_t>(a.rows) * groups);
  for (int r = 0; r < a.rows; ++r) {
    for (int g = 0; g < groups; ++g) {
      const float* x = a.x + static_cast<size_t>(r) * a.k + static_cast<size_t>(g) * a.group_size;
      float sum = 0.0f;
      for (int i = 0; i < a.group_size; ++i) {
        sum += x[i];
      }
      x_sums[static_cast<size_t>(r) * groups + g] = sum;
    }
  }
  for (int n = n_begin; n < n_end; ++n) {
    const uint32_t* w = a.w + static_cast<size_t>(n) * groups * words_per_group;
    const float* scales = a.scales + static_cast<size_t>(n) * groups;
    const float* biases = a.biases + static_cast<size_t>(n) * groups;
    for (int r = 0; r < a.rows; ++r) {
      const float* x = a.x + static_cast<size_t>(r) * a.k;
      const float* sums = x_sums.data() + static_cast<size_t>(r) * groups;
      float acc = 0.0f;
      for (int g = 0; g < groups; ++g) {
        float dot = 0.0f;
        for (int i = 0; i < words_per_group; ++i) {
          const uint32_t word = w[g * words_per_group + i];
          const float* xw = x + (g * words_per_group + i) * per_word;
          for (int j = 0; j < per_word; ++j) {
            dot += xw[j] * static_cast<float>((word >> (j * Bits)) & mask);
          }
        }
        acc += scales[g] * dot + biases[g] * sums[g];
      }
      a.out[static_cast<size_t>(r) * a.n + n] = acc;
    }
  }
}

} // namespace

void qmm_scalar(const QmmArgs& a, int n_begin, int n_end) {
  if (a.bits == 4) {
    qmm_scalar_bits<4>(a, n_begin, n_end);
  } else {
    qmm_scalar_bits<8>(a, n_begin, n_end);
  }
}

mx::array quantized_matmul(
    const mx::array& x,
    const mx::array& w,
    const mx::array& scales,
    const mx::array& biases,
    int group_size,
    int bits,
    mx::StreamOrDevice s) {
  require(bits == 4 || bits == 8, "bits must be 4 or 8");
  require(group_size == 32 || group_size == 64 || group_size == 128, "group_size must be 32, 64 or 128");
  require(x.dtype() == mx::float32, "x must be float32");
  require(
      scales.dtype() == mx::float32 && biases.dtype() == mx::float32, "scales and biases must be float32");
  require(w.dtype() == mx::uint32, "w must be uint32");
  require(x.ndim() >= 1 && w.ndim() == 2, "x must have at least one dimension and w exactly two");
  const int64_t k = x.shape(-1);
  const int64_t n = w.shape(0);
  const int64_t rows = k > 0 ? static_cast<int64_t>(x.size()) / k : 0;
  require(k > 0 && n > 0 && rows > 0, "empty inputs are left to MLX");
  require(static_cast<int64_t>(w.shape(1)) * 32 / bits == k, "w's packed width does not match x");
  require(k % group_size == 0, "x's last dimension must be a multiple of group_size");
  const mx::Shape group_shape = {static_cast<int>(n), static_cast<int>(k / group_size)};
  require(scales.shape() == group_shape && biases.shape() == group_shape, "scales/biases shape mismatch");
  require(rows * n < (int64_t{1} << 31), "output too large");
  const mx::Stream stream = mx::to_stream(s);
  require(stream.device == mx::Device::cpu, "only CPU streams are supported");

  mx::Shape out_shape = x.shape();
  out_shape.back() = static_cast<int>(n);
  return mx::array(
      std::move(out_shape),
      mx::float32,
      std::make_shared<CpuQuantizedMatmul>(stream, group_size, bits),
      {x, w, scales, biases});
}

std::string simd() {
  return simd_active() ? "avx2" : "scalar";
}

void use_simd(bool enabled) {
  simd_enabled.store(enabled, std::memory_order_relaxed);
}

void CpuQuantizedMatmul::eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) {
  out.set_data(mx::allocator::malloc(out.nbytes()));
  auto& encoder = mx::cpu::get_command_encoder(stream());
  for (const auto& in : inputs) {
    encoder.set_input_array(in);
  }
  encoder.set_output_array(out);

  const Input x(inputs[0]), w(inputs[1]), scales(inputs[2]), biases(inputs[3]);
  const int k = inputs[0].shape(-1);
  const int n = inputs[1].shape(0);
  const int rows = static_cast<int>(inputs[0].size() / k);
  float* out_ptr = out.data<float>();
  const int group_size = group_size_;
  const int bits = bits_;
  const bool simd = simd_active();
  encoder.dispatch([=]() {
    std::vector<float> x_copy, scales_copy, biases_copy;
    std::vector<uint32_t> w_copy;
    const QmmArgs args{
        x.row_major(x_copy),
        w.row_major(w_copy),
        scales.row_major(scales_copy),
        biases.row_major(biases_copy),
        out_ptr,
        rows,
        k,
        n,
        group_size,
        bits};
    WorkerPool& pool = WorkerPool::instance();
    const int tiles = (n + kTile - 1) / kTile;
    const int64_t work = static_cast<int64_t>(rows) * n * k;
    const int most = std::min(pool.size(), tiles);
    const int parts = static_cast<int>(std::clamp<int64_t>(work / kMinWorkPerThread, 1, most));
    pool.run(parts, [&](int part) {
      const int n_begin = std::min(n, static_cast<int>(int64_t{tiles} * part / parts) * kTile);
      const int n_end = std::min(n, static_cast<int>(int64_t{tiles} * (part + 1) / parts) * kTile);
      if (simd) {
        thread_local std::vector<float> scratch;
        scratch.resize(static_cast<size_t>(kTile) * k);
        qmm_avx2(args, n_begin, n_end, scratch.data());
      } else {
        qmm_scalar(args, n_begin, n_end);
      }
    });
  });
}

void CpuQuantizedMatmul::eval_gpu(const std::vector<mx::array>&, mx::array&) {
  throw std::runtime_error("[pensieve quantized_matmul] CpuQuantizedMatmul has no GPU implementation.");
}

bool CpuQuantizedMatmul::is_equivalent(const mx::Primitive& other) const {
  const auto& o = static_cast<const CpuQuantizedMatmul&>(other);
  return group_size_ == o.group_size_ && bits_ == o.bits_;
}

std::vector<mx::Shape> CpuQuantizedMatmul::output_shapes(const std::vector<mx::array>& inputs) {
  mx::Shape shape = inputs[0].shape();
  shape.back() = inputs[1].shape(0);
  return {shape};
}

} // namespace pensieve::kernels
