// Lint rules: typescript-eslint's type-checked recommendations, plus the one door to the kernel.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'build/', 'node_modules/', 'eslint.config.js'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/no-floating-promises': [
        'error',
        {
          allowForKnownSafeCalls: [
            {
              from: 'package',
              package: 'node:test',
              name: ['test', 'it', 'describe', 'suite', 'before', 'after'],
            },
          ],
        },
      ],
      'no-restricted-imports': [
        'error',
        { paths: [{ name: 'koffi', message: 'Only src/sys/ talks to the kernel through koffi.' }] },
      ],
    },
  },
  { files: ['src/sys/**'], rules: { 'no-restricted-imports': 'off' } },
);
