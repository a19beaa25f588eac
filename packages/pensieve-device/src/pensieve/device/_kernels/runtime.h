// What the CPU primitives share: the CPU check, the worker pool and input views. Never included by
// the *_avx2.cpp files: an inline function here compiled with -mavx2 could be the copy the linker keeps.
#pragma once

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "mlx/allocator.h"
#include "mlx/array.h"
#include "mlx/backend/cpu/encoder.h"

namespace pensieve::kernels {

namespace mx = mlx::core;

// Multiply-adds (rows * n * k) below which another thread costs more than it saves. Alone, a
// 576 x 576 matmul of one row gains from two threads; inside a pipelined decode step the other core
// is better left to Python building the next step's graph: a one-row step of the default model ran
// ~15% faster with 2^21 than with 2^17. 2^20 keeps its one-row layer matmuls (at most 1536 x 576)
// on one thread and splits them from two rows: a step of 8 sequences ran ~5% faster than with 2^21.
constexpr int64_t kMinWorkPerThread = 1 << 20;

// Threads a matmul is split over at most: decode matmuls are memory-bound well before this.
constexpr int kMaxThreads = 8;
static_assert(kMaxThreads < 256, "WorkerPool packs the part count into 8 bits");

// How long an idle worker (or a caller waiting for workers) spins before sleeping. Waking a sleeping
// thread costs tens of microseconds on a VM, as much as a small matmul, while a decode step issues
// matmuls back to back; spinning halved the matmul time of a batch-8 step here.
constexpr std::chrono::microseconds kSpin{100};

// The instruction sets the kernels use, best first; each implies the ones after it.
enum class Simd { kAvx512, kAvx2, kScalar };

inline Simd cpu_simd() {
  static const Simd supported = [] {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
      return Simd::kScalar;
    }
    const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
    return avx512 ? Simd::kAvx512 : Simd::kAvx2;
  }();
  return supported;
}

// The best instruction set the kernels may use: tests lower it to run the other kernels.
inline std::atomic<Simd> simd_cap{Simd::kAvx512};

// What the kernels run with now: the CPU's best within the cap.
inline Simd simd_active() {
  return std::max(cpu_simd(), simd_cap.load(std::memory_order_relaxed));
}

// Persistent threads that, with the calling thread, split one op's work: MLX runs a stream's tasks
// on one scheduler thread, so without them a kernel uses one core.
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

// Allocates a primitive's output and registers its arrays with the stream's CPU command encoder,
// whose dispatch then runs the work on MLX's thread for the stream.
inline mx::cpu::CommandEncoder& cpu_encoder(mx::Stream stream, const std::vector<mx::array>& inputs, mx::array& out) {
  out.set_data(mx::allocator::malloc(out.nbytes()));
  auto& encoder = mx::cpu::get_command_encoder(stream);
  for (const auto& in : inputs) {
    encoder.set_input_array(in);
  }
  encoder.set_output_array(out);
  return encoder;
}

// Throws std::invalid_argument (ValueError in Python): the caller falls back to MLX.
inline void require(bool condition, const char* op, const std::string& message) {
  if (!condition) {
    throw std::invalid_argument(std::string("[pensieve ") + op + "] " + message);
  }
}

} // namespace pensieve::kernels
