// Tests of WorkspaceLayout (src/cuda/common/workspace_layout.h), the named-slice layout of the
// GPU calls' workspaces and the CUDA engine's per-step arrays: slices follow each other in order,
// each starting on the alignment, and the total covers the last one rounded up.
#include <gtest/gtest.h>

#include <cstdint>

#include "../../src/cuda/common/workspace_layout.h"

using kascade::cuda::kWorkspaceAlignment;
using kascade::cuda::WorkspaceLayout;
using kascade::cuda::WorkspaceSlice;

TEST(WorkspaceLayout, SlicesFollowEachOtherOnTheAlignment) {
  WorkspaceLayout layout;
  const WorkspaceSlice<float> a = layout.slice<float>(3);        // 12 bytes -> next at 256
  const WorkspaceSlice<double> b = layout.slice<double>(64);     // 512 bytes, already aligned
  const WorkspaceSlice<int32_t> c = layout.slice<int32_t>(65);   // 260 bytes -> 512
  EXPECT_EQ(a.offset, 0u);
  EXPECT_EQ(a.count, 3u);
  EXPECT_EQ(b.offset, kWorkspaceAlignment);
  EXPECT_EQ(c.offset, kWorkspaceAlignment + 512);
  EXPECT_EQ(c.count, 65u);
  EXPECT_EQ(layout.total_bytes(), kWorkspaceAlignment + 512 + 512);
}

TEST(WorkspaceLayout, EmptySlicesTakeNoRoom) {
  WorkspaceLayout layout;
  const WorkspaceSlice<float> empty = layout.slice<float>(0);
  const WorkspaceSlice<float> next = layout.slice<float>(1);
  EXPECT_EQ(empty.offset, 0u);
  EXPECT_EQ(next.offset, 0u);
  EXPECT_EQ(layout.total_bytes(), kWorkspaceAlignment);
  EXPECT_EQ(WorkspaceLayout().total_bytes(), 0u);
}

TEST(WorkspaceLayout, ElementAlignmentPacksArraysBackToBack) {
  // The engine's int32 step arrays: consecutive, so a decode-only step's offsets depend on its
  // batch size alone.
  WorkspaceLayout layout(sizeof(int32_t));
  const WorkspaceSlice<int32_t> ids = layout.slice<int32_t>(5);
  const WorkspaceSlice<int32_t> lens = layout.slice<int32_t>(2);
  const WorkspaceSlice<int32_t> indptr = layout.slice<int32_t>(3);
  EXPECT_EQ(ids.offset, 0u);
  EXPECT_EQ(lens.offset, 5 * sizeof(int32_t));
  EXPECT_EQ(indptr.offset, 7 * sizeof(int32_t));
  EXPECT_EQ(layout.total_bytes(), 10 * sizeof(int32_t));
}

TEST(WorkspaceLayout, SlicesPointIntoTheBuffer) {
  int32_t buffer[10] = {};
  WorkspaceLayout layout(sizeof(int32_t));
  layout.slice<int32_t>(4);
  const WorkspaceSlice<int32_t> second = layout.slice<int32_t>(6);
  EXPECT_EQ(second.in(static_cast<void*>(buffer)), buffer + 4);
  EXPECT_EQ(second.in(static_cast<const void*>(buffer)), buffer + 4);
}
