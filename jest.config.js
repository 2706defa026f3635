// jest runs the TypeScript tests against the real kernel: every test boots
// kernels through the addon built in build/native.
module.exports = {
  testEnvironment: 'node',
  testMatch: ['<rootDir>/packages/*/__tests__/**/*.test.ts'],
  transform: {
    '^.+\\.ts$': ['ts-jest', { tsconfig: '<rootDir>/tsconfig.test.json' }],
  },
  testTimeout: 120000,
  // The packages' tests use each other's sources, not their builds.
  moduleNameMapper: { '^@lkl-um/core$': '<rootDir>/packages/core/src' },
};
